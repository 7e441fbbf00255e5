"""Who is calling and what they may do: authentication, authorization, tokens, TLS, denials."""
