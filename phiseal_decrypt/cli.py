"""``phiseal-decrypt``: decrypt a value, an event, or a JSON-lines file with your private keys."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import orjson
from tqdm import tqdm

from phiseal_decrypt import exactjson
from phiseal_decrypt.core import (
    DecryptError,
    Decryptor,
    Keyring,
    PassphraseRequired,
    decrypt_lines,
    split_key_spec,
)
from phiseal_decrypt.paths import parse_path

USAGE_EXAMPLES = """examples:
  phiseal-decrypt --key dest_1.v1.pem value 'eyJhbGciOi...'
  phiseal-decrypt --key dest_1.v1.pem --key dest_1.v2=new.pem event received.json
  phiseal-decrypt --key k.pem --passphrase-env KEY_PASS file export.jsonl -o plain.jsonl
  phiseal-decrypt --key dest_1.v2.pem challenge 'eyJhbGciOi...'
  phiseal-decrypt --key k.pem --only traits.email --only 'properties.allergy[*]' file in.jsonl
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phiseal-decrypt",
        description="Decrypt PHIseal ciphertext with your destination's private key(s).",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="[KID=]FILE",
        help="a PKCS#8 PEM private key; repeat for rotated keys (optionally labelled by kid)",
    )
    parser.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="read the private keys' passphrase from this environment variable "
        "(otherwise you are prompted when a key is protected)",
    )
    parser.add_argument(
        "--segment",
        action="store_true",
        help="also decrypt SEGMENT_RSA_OAEP values (base64 strings of one RSA block)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not cache unwrapped data keys")
    parser.add_argument(
        "--only",
        action="append",
        metavar="PATH",
        help="decrypt only values at this field path (repeat for each of the policy's paths); "
        "anything else, even if it looks like ciphertext, is left as it is",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    value = sub.add_parser("value", help="decrypt one ciphertext string")
    value.add_argument("ciphertext")
    value.add_argument("--message-id", help="check the value is bound to this messageId")
    value.add_argument("--path", help="check the value is bound to this field path")
    value.add_argument("--format", choices=("jwe", "segment"), default="jwe")
    challenge = sub.add_parser(
        "challenge", help="decrypt a RegenerateKeyPair/ImportPublicKey challenge for ConfirmKey"
    )
    challenge.add_argument("ciphertext")
    event = sub.add_parser("event", help="decrypt one JSON event (file or - for stdin)")
    event.add_argument("input", nargs="?", default="-")
    lines = sub.add_parser("file", help="decrypt a JSON-lines file (or - for stdin)")
    lines.add_argument("input")
    lines.add_argument("-o", "--output", default="-", help="where to write JSON lines (- stdout)")
    lines.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _keyring(args: argparse.Namespace) -> Keyring:
    passphrase: bytes | None = None
    if args.passphrase_env:
        raw = os.environ.get(args.passphrase_env)
        if raw is None:
            raise DecryptError(f"the environment variable {args.passphrase_env} is not set")
        passphrase = raw.encode("utf-8")
    ring = Keyring()
    for spec in args.key:
        kid, path = split_key_spec(spec)
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise DecryptError(f"cannot read key file {path}: {exc.strerror}") from None
        try:
            ring.add_pem(pem, kid=kid, passphrase=passphrase, source=path)
        except PassphraseRequired:
            if not sys.stdin.isatty():
                raise DecryptError(
                    f"{path} is passphrase-protected: use --passphrase-env VAR"
                ) from None
            passphrase = getpass.getpass(f"passphrase for {path}: ").encode("utf-8")
            ring.add_pem(pem, kid=kid, passphrase=passphrase, source=path)
    return ring


def _open_in(name: str) -> BinaryIO:
    return sys.stdin.buffer if name == "-" else open(name, "rb")


def _with_progress(stream: BinaryIO, name: str, enabled: bool) -> Iterator[bytes]:
    total = Path(name).stat().st_size if name != "-" else None
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="decrypting", disable=not enabled
    ) as bar:
        for line in stream:
            bar.update(len(line))
            yield line


class _Errors:
    """Reports values that fail, one line each, without breaking the progress bar's line."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, number: int, path: str, error: DecryptError) -> None:
        self.count += 1
        where = f"line {number}: {path}: " if path else f"line {number}: "
        # tqdm.write clears the bar, writes the line, then redraws the bar below it.
        tqdm.write(f"phiseal-decrypt: {where}{error}", file=sys.stderr)


def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    errors = _Errors()
    try:
        if args.only:
            for path in args.only:
                parse_path(path)
        decryptor = Decryptor(_keyring(args), cache_size=0 if args.no_cache else 4096)
        if args.command == "value":
            if args.format == "segment":
                result = decryptor.decrypt_segment(args.ciphertext)
            else:
                result = decryptor.decrypt_value(
                    args.ciphertext, message_id=args.message_id, path=args.path
                )
            sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
        elif args.command == "challenge":
            print(decryptor.decrypt_challenge(args.ciphertext))
        elif args.command == "event":
            with _open_in(args.input) as stream:
                event = exactjson.loads(stream.read())
            if not isinstance(event, dict):
                raise DecryptError("the event is not a JSON object")
            failed: list[tuple[str, DecryptError]] = []
            opened = decryptor.decrypt_event(
                event, segment=args.segment, only=args.only, errors=failed
            )
            for path, exc in failed:
                errors(1, path, exc)
            sys.stdout.buffer.write(orjson.dumps(opened) + b"\n")
        else:
            out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
            with _open_in(args.input) as stream, out:
                progress = not args.no_progress
                lines = _with_progress(stream, args.input, progress)
                for chunk in decrypt_lines(
                    decryptor, lines, segment=args.segment, only=args.only, on_error=errors
                ):
                    out.write(chunk)
    except (DecryptError, orjson.JSONDecodeError, OSError, ValueError) as exc:
        print(f"phiseal-decrypt: {exc}", file=sys.stderr)
        return 1
    return 1 if errors.count else 0


def main() -> None:
    raise SystemExit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
