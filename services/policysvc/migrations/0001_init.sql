-- policysvc's own tables arrive with the keysvc issue.
SELECT 1;
