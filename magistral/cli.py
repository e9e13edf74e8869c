"""`magistral serve | keys | chat | eval`."""

from __future__ import annotations

import argparse
import logging
import sys

DEFAULT_PORT = 8000


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from magistral.api.app import create_app
    from magistral.chat.images import ImagePolicy
    from magistral.engine.registry import ModelRegistry, load_model
    from magistral.platform.store import Store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store(args.database_url)
    specs = args.model or [None]
    models = [load_model(spec, max_active=args.max_active, quantize=args.quantize, engine=args.engine)
              for spec in specs]
    policy = ImagePolicy(allow_private_hosts=args.allow_private_image_hosts)
    app = create_app(ModelRegistry(models), store, policy)
    print(f"magistral: serving {', '.join(m.id for m in models)} on http://{args.host}:{args.port}",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _keys(args: argparse.Namespace) -> int:
    from magistral.platform.keys import create_key, list_keys, revoke_key
    from magistral.platform.store import Store

    store = Store(args.database_url)
    if args.keys_command == "create":
        info, secret = create_key(store, args.name)
        print(f"Created key {info.id} ({info.name}). Store it now; it is not shown again:",
              file=sys.stderr)
        print(secret)
    elif args.keys_command == "list":
        print(f"{'ID':>4}  {'NAME':<24} {'PREFIX':<12} {'CREATED':<20} STATUS")
        for k in list_keys(store):
            status = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
            print(f"{k.id:>4}  {k.name:<24} {k.prefix:<12} {k.created_at:%Y-%m-%d %H:%M:%S}  {status}")
    elif args.keys_command == "revoke":
        if not revoke_key(store, args.id):
            print(f"no key with id {args.id}", file=sys.stderr)
            return 1
        print(f"revoked key {args.id}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from magistral.client import APIStatusError, Client

    params = {"max_tokens": args.max_tokens}
    if args.temperature is not None:
        params["temperature"] = args.temperature
    try:
        with Client(args.base_url, args.api_key) as client:
            thinking = False
            for event in client.chat.stream(model=args.model, messages=[{"role": "user",
                                                                          "content": args.prompt}], **params):
                if event.kind == "thinking":
                    if not thinking:
                        sys.stdout.write("[thinking] ")
                    thinking = True
                    sys.stdout.write(event.text)
                elif event.kind == "text":
                    if thinking:
                        sys.stdout.write("\n[answer] ")
                        thinking = False
                    sys.stdout.write(event.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
    except APIStatusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _eval(args: argparse.Namespace) -> int:
    from magistral.evals.command import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magistral", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--database-url", help="SQLAlchemy URL (default: $MAGISTRAL_DATABASE_URL or "
                    "a SQLite file under ~/.local/share/magistral)")

    serve = sub.add_parser("serve", parents=[db], help="start the API server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--model", action="append",
                       help="a .gguf file or a checkpoint folder (HF config.json or Mistral params.json, "
                       "with tekken.json); repeatable (default: the embedded SmolLM2-135M-Instruct)")
    serve.add_argument("--max-active", type=int, default=16,
                       help="sequences generated at once per model; others wait in a queue")
    serve.add_argument("--engine", choices=["native", "llamacpp"], default="native",
                       help="native: our PyTorch engine; llamacpp: llama.cpp on the same GGUF "
                       "(pip install 'magistral[llamacpp]')")
    serve.add_argument("--quantize", choices=["auto", "none", "bf16", "int4"], default="auto",
                       help="serving weights: auto = int4 for GGUF files (their weights are 4-bit already), "
                       "fp32 for safetensors checkpoints")
    serve.add_argument("--allow-private-image-hosts", action="store_true",
                       help="let image URLs reach loopback/private addresses (on-premise image servers)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", parents=[db], help="create a key and print it once")
    create.add_argument("--name", required=True)
    keys_sub.add_parser("list", parents=[db], help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", parents=[db], help="revoke a key by id")
    revoke.add_argument("id", type=int)
    keys.set_defaults(func=_keys)

    chat = sub.add_parser("chat", help="ask a running server one question, streaming the answer")
    chat.add_argument("prompt")
    chat.add_argument("--base-url", default=None, help="default $MAGISTRAL_BASE_URL or "
                      f"http://127.0.0.1:{DEFAULT_PORT}")
    chat.add_argument("--api-key", default=None, help="default $MAGISTRAL_API_KEY")
    chat.add_argument("--model", default="magistral-medium-latest")
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument("--temperature", type=float, default=None)
    chat.set_defaults(func=_chat)

    ev = sub.add_parser("eval", help="run benchmarks against any compatible endpoint")
    from magistral.evals.command import add_arguments
    add_arguments(ev)
    ev.set_defaults(func=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
