"""`magistral serve | keys | accounts | usage | chat | eval`."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_PORT = 8000


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from magistral.api.app import create_app
    from magistral.chat.images import ImagePolicy
    from magistral.engine.embedder import default_embedding_source
    from magistral.engine.registry import ModelRegistry, default_models, load_embedder, load_model
    from magistral.platform.config import PlatformConfig
    from magistral.platform.gateway import Platform
    from magistral.platform.store import Store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store(args.database_url)
    config = PlatformConfig.load(args.platform_config)
    platform = Platform.create(store, redis_url=args.redis_url, config=config, namespace=args.redis_namespace,
                               replica=args.replica_id or f"{socket.gethostname()}:{args.port}",
                               enabled=not args.no_platform_for_benchmarks)
    specs = args.model or ([] if args.upstream else default_models())  # only upstreams: no local model
    # --engine picks who serves the GGUF; the shipped magistral-mini (a checkpoint folder) is
    # always served by our engine, so `serve --engine llamacpp` alone still starts
    models = [load_model(spec, max_active=args.max_active, quantize=args.quantize,
                         engine="native" if spec is not None and not args.model else args.engine,
                         chat_template=args.chat_template, fast_batched_decode=args.fast_batched_decode,
                         compile_decode=args.compile)
              for spec in specs]
    if args.upstream:
        from magistral.engine.backends.upstream import parse_upstreams, upstream_model

        try:
            pools = parse_upstreams(args.upstream, args.upstream_key)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        models += [upstream_model(name, upstreams, platform.metrics.registry, timeout=args.upstream_timeout)
                   for name, upstreams in pools.items()]
    if args.embedding_model:
        embedders = [load_embedder(None if source == "default" else source)
                     for source in args.embedding_model]
    elif default_embedding_source() is not None and not args.no_embedding_model:
        embedders = [load_embedder()]
    else:
        embedders = []
    policy = ImagePolicy(allow_private_hosts=args.allow_private_image_hosts)
    registry = ModelRegistry(models, embedders)
    from magistral.console.settings import ConsoleSettings

    console = ConsoleSettings()
    console.smtp_url = args.smtp_url or console.smtp_url
    console.mail_from = args.mail_from or console.mail_from
    console.public_url = args.public_url or console.public_url
    app = create_app(registry, platform, policy, cors_origins=args.cors_origin,
                     reasoning_output=args.reasoning_output, body_timeout=args.body_timeout,
                     console=console, public_url=f"http://{args.host}:{args.port}")
    print(f"magistral: serving {', '.join(m.id for m in registry.everything)} on "
          f"http://{args.host}:{args.port}", flush=True)
    from magistral.api.transport import GuardedH11Protocol

    GuardedH11Protocol.header_timeout = args.header_timeout
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, http=GuardedH11Protocol)
    return 0


MAX_EXPIRY = timedelta(days=100 * 365)  # further than this is a typo, not a plan


def _expiry(value: str | None) -> datetime | None:
    """'30d', '12h' or an ISO date/time (UTC), in the future and within 100 years."""
    if value is None:
        return None
    now = datetime.now(UTC)
    if value[:-1].isdigit() and value[-1] in "dh":
        amount = int(value[:-1])
        span = timedelta(days=min(amount, 10**6)) if value[-1] == "d" else timedelta(hours=min(amount, 10**7))
        moment = now + min(span, MAX_EXPIRY + timedelta(days=1))
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"--expires {value!r}: not '30d', '12h' or an ISO date") from exc
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment <= now:
        raise ValueError(f"--expires {value!r} is in the past")
    if moment - now > MAX_EXPIRY:
        raise ValueError(f"--expires {value!r} is more than 100 years away")
    return moment


def _database_url(text: str) -> str:
    """`@PATH` reads the URL from a file (so its password is in no process title); a password
    typed on the command line is accepted with a warning."""
    if text.startswith("@"):
        try:
            return Path(text[1:]).read_text().strip()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read the database URL from {text[1:]}: {exc}") from exc
    from sqlalchemy.engine import make_url

    if "://" in text and make_url(text).password:
        print("warning: the --database-url password is visible to every local user in the process list; "
              "use $MAGISTRAL_DATABASE_URL or --database-url @FILE", file=sys.stderr)
    return text


def _chat_template(path: str) -> str:
    """A Jinja chat template file, read and compiled now so that a bad one stops the start."""
    from jinja2 import TemplateError

    from magistral.chat.template import ChatTemplate

    try:
        source = Path(path).read_text(encoding="utf-8")
        ChatTemplate(source)
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc}") from exc
    except TemplateError as exc:
        raise argparse.ArgumentTypeError(f"{path} is not a valid Jinja template: {exc}") from exc
    return source


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _db(args: argparse.Namespace) -> int:
    from magistral.platform.store import Store

    store = Store(args.database_url)  # opening a store migrates it
    before, after = store.schema_upgrade
    print(f"database schema at revision {after}" + (f" (upgraded from {before})" if before != after
                                                     and before is not None else ""))
    store.dispose()
    return 0


def _keys(args: argparse.Namespace) -> int:
    from magistral.platform.keys import create_key, list_keys, revoke_key
    from magistral.platform.store import Store

    store = Store(args.database_url)
    if args.keys_command == "create":
        try:
            info, secret = create_key(store, args.name, args.account, rpm=args.rpm, tpm=args.tpm,
                                      expires_at=_expiry(args.expires), admin=args.admin)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"Created key {info.id} ({info.name}) of account {info.account}. Store it now; it is not "
              "shown again:", file=sys.stderr)
        print(secret)
    elif args.keys_command == "list":
        print(f"{'ID':>4}  {'NAME':<20} {'ACCOUNT':<16} {'PREFIX':<12} {'RPM':>6} {'TPM':>9} "
              f"{'CREATED':<17} STATUS")
        for k in list_keys(store, args.account):
            status = (f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at
                      else "expired" if k.expired
                      else f"active until {k.expires_at:%Y-%m-%d}" if k.expires_at else "active")
            print(f"{k.id:>4}  {k.name:<20} {k.account:<16} {k.prefix:<12} {k.rpm or 'tier':>6} "
                  f"{k.tpm or 'tier':>9} {k.created_at:%Y-%m-%d %H:%M}  {status}"
                  f"{' admin' if k.is_admin else ''}")
    elif args.keys_command == "revoke":
        if not revoke_key(store, args.id):
            print(f"no key with id {args.id}", file=sys.stderr)
            return 1
        print(f"revoked key {args.id}")
    return 0


def _accounts(args: argparse.Namespace) -> int:
    from magistral.console import audit, operator
    from magistral.console.people import set_operator
    from magistral.platform.accounts import create_account, list_accounts
    from magistral.platform.config import PlatformConfig
    from magistral.platform.store import Store

    store = Store(args.database_url)
    try:
        if args.accounts_command == "create":
            info = create_account(store, args.name, tier=args.tier, status=args.status)
            print(f"created account {info.name} (tier {info.tier}, billing {info.billing_status})")
        elif args.accounts_command == "list":
            print(f"{'ID':>4}  {'NAME':<24} {'TIER':<12} BILLING")
            for a in list_accounts(store):
                print(f"{a.id:>4}  {a.name:<24} {a.tier:<12} {a.billing_status}")
        elif args.accounts_command in ("suspend", "activate"):  # audited, as in the operator console
            status = "suspended" if args.accounts_command == "suspend" else "active"
            operator.change_status(store, args.name, status, audit.cli_actor())
            print(f"account {args.name} is {status}")
        elif args.accounts_command == "set-tier":
            operator.change_tier(store, PlatformConfig.load(args.platform_config), args.name, args.tier,
                                 audit.cli_actor())
            print(f"account {args.name} is in tier {args.tier}")
        elif args.accounts_command == "operator":  # a console user who sees the operator console
            if not set_operator(store, args.email, not args.revoke):
                print(f"no console user {args.email!r} (sign up at /console first)", file=sys.stderr)
                return 1
            audit.record(store, audit.cli_actor(), "operator:" + ("revoke" if args.revoke else "grant"), None,
                         email=args.email)
            print(f"{args.email} is {'no longer ' if args.revoke else ''}an operator")
    except operator.NoSuchAccount:
        print(f"no account named {args.name!r}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _usage(args: argparse.Namespace) -> int:
    from magistral.platform.accounts import get_account
    from magistral.platform.billing import invoice_for
    from magistral.platform.config import PlatformConfig
    from magistral.platform.store import Store

    store = Store(args.database_url)
    account = get_account(store, args.account)
    if account is None:
        print(f"no account named {args.account!r}", file=sys.stderr)
        return 1
    month = args.month or datetime.now(UTC).strftime("%Y-%m")
    invoice = invoice_for(store, PlatformConfig.load(args.platform_config), account.id, account.name, month)
    if args.json:
        import json
        print(json.dumps(invoice.as_dict(), indent=1))
        return 0
    print(f"Invoice of {account.name} for {month}")
    print(f"{'MODEL':<28} {'INPUT TOKENS':>14} {'OUTPUT TOKENS':>14} {'LIST $':>14} {'DISCOUNT $':>13} "
          f"{'AMOUNT $':>14}")
    for line in invoice.as_dict()["lines"]:
        print(f"{line['model']:<28} {line['prompt_tokens']:>14,} {line['completion_tokens']:>14,} "
              f"{line['list_usd']:>14} {line['discount_usd']:>13} {line['amount_usd']:>14}")
    for tier, tokens in invoice.tokens_by_tier.items():
        print(f"  {tokens:,} tokens {tier}")
    print(f"TOTAL {invoice.total_tokens:,} tokens: ${invoice.total} ({invoice.total_micros} micro-dollars)")
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


def _train(args: argparse.Namespace) -> int:
    from magistral.train.sft import SFTConfig, train

    config = SFTConfig(out=Path(args.out), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       seed=args.seed, minutes=args.minutes, resume=args.resume, eval_every=args.eval_every,
                       eval_size=args.eval_size)
    print(f"model: {train(config)}")
    return 0


def _train_grpo(args: argparse.Namespace) -> int:
    from magistral.train.grpo import GRPOConfig, train

    config = GRPOConfig(init=Path(args.init), out=Path(args.out), steps=args.steps,
                        prompts_per_step=args.prompts, group_size=args.group_size, lr=args.lr,
                        max_tokens=args.max_tokens, seed=args.seed, minutes=args.minutes,
                        eval_every=args.eval_every, eval_size=args.eval_size, resume=args.resume)
    print(f"model: {train(config)}")
    return 0


def _train_ship(args: argparse.Namespace) -> int:
    from magistral.train.ship import ship

    print(f"shipped: {ship(Path(args.model), Path(args.card) if args.card else None)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from magistral.evals.command import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magistral", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--database-url", type=_database_url, help="SQLAlchemy URL (default: "
                    "$MAGISTRAL_DATABASE_URL or a SQLite file under ~/.local/share/magistral); a URL with a "
                    "password belongs in that variable or in a file named as @/path/to/file, not here, "
                    "where every local user can read it in the process list")

    database = sub.add_parser("db", help="the database's schema")
    database_sub = database.add_subparsers(dest="db_command", required=True)
    database_sub.add_parser("upgrade", parents=[db], help="migrate the database to this version's schema "
                            "(serve does it too when it opens an older database)").set_defaults(func=_db)

    serve = sub.add_parser("serve", parents=[db], help="start the API server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--model", action="append",
                       help="a .gguf file or a checkpoint folder (HF config.json or Mistral params.json, "
                       "with tekken.json); repeatable (default: the embedded SmolLM2-135M-Instruct)")
    serve.add_argument("--upstream", action="append", default=None, metavar="NAME=URL",
                       help="serve model NAME by forwarding to an OpenAI-compatible server (vLLM, SGLang, "
                       "llama.cpp's server, another magistral); repeat a NAME with other URLs for a pool")
    serve.add_argument("--upstream-key", action="append", default=None, metavar="[NAME=]KEY",
                       help="the Bearer key the upstreams (or NAME's) expect, or @FILE that holds it "
                       "(a key on the command line is visible to every local user); repeatable")
    serve.add_argument("--upstream-timeout", type=float, default=120.0,
                       help="seconds to wait for an upstream's next chunk before the request fails")
    serve.add_argument("--embedding-model", action="append",
                       help="a sentence-transformers BERT folder or zip for /v1/embeddings; repeatable "
                       "(default: the packaged all-MiniLM-L6-v2, id all-minilm-l6-v2, alias mistral-embed)")
    serve.add_argument("--no-embedding-model", action="store_true", help="serve no embedding model")
    serve.add_argument("--chat-template", type=_chat_template, default=None, metavar="FILE",
                       help="a Jinja chat template for GGUF models, used instead of the one the file "
                       "carries (e.g. one that renders tools in the Hermes <tool_call> format)")
    serve.add_argument("--max-active", type=int, default=16,
                       help="sequences generated at once per model; others wait in a queue")
    serve.add_argument("--engine", choices=["native", "llamacpp"], default="native",
                       help="native: our PyTorch engine; llamacpp: llama.cpp on the same GGUF "
                       "(pip install 'magistral[llamacpp]')")
    serve.add_argument("--quantize", choices=["auto", "none", "bf16", "int4"], default="auto",
                       help="serving weights: auto = int4 for GGUF files (their weights are 4-bit already), "
                       "fp32 for safetensors checkpoints")
    serve.add_argument("--fast-batched-decode", action="store_true",
                       help="decode steps of many streams use bf16 copies of int4/int8 weights and prompts "
                       "arriving together are prefilled in one batch (faster at 16 streams), so a request's "
                       "greedy tokens may depend on what else runs")
    serve.add_argument("--compile", action="store_true",
                       help="compile the decode step with torch.compile (Inductor; needs a C++ compiler): "
                       "faster decoding, ~20 s more at the first start, a few seconds once cached")
    serve.add_argument("--redis-url", default=None,
                       help="share rate limits between replicas in Redis (default: in this process)")
    serve.add_argument("--redis-namespace", default="magistral",
                       help="prefix of this deployment's keys in Redis (replicas that share limits share it)")
    serve.add_argument("--platform-config", default=None,
                       help="JSON with prices, volume tiers and default limits (see platform/config.py)")
    serve.add_argument("--replica-id", default=None, help="this replica's name in usage rows "
                       "(default host:port); at startup its rows left in progress are closed")
    serve.add_argument("--no-platform-for-benchmarks", action="store_true",
                       help=argparse.SUPPRESS)  # no auth, limits or metering: bench/platform_overhead.py only
    serve.add_argument("--allow-private-image-hosts", action="store_true",
                       help="let image URLs reach loopback/private addresses (on-premise image servers)")
    serve.add_argument("--cors-origin", action="append", default=None,
                       help="an origin (e.g. https://app.example.com) whose web pages may call the API; "
                       "repeatable; none by default")
    serve.add_argument("--reasoning-output", choices=["mistral", "openai"], default="mistral",
                       help="how reasoning models return their trace: Mistral's thinking chunks (default) "
                       "or OpenAI-style string content plus reasoning_content; a request's "
                       "reasoning_format overrides it")
    serve.add_argument("--header-timeout", type=float, default=10.0,
                       help="seconds a client has to send a request's headers (slow ones are cut off)")
    serve.add_argument("--body-timeout", type=float, default=60.0,
                       help="seconds a client has to send a request's body (408 after)")
    serve.add_argument("--smtp-url", default=None,
                       help="the console's mail server: smtp://[user:pass@]host[:port] (STARTTLS if offered) "
                       "or smtps://…; default $MAGISTRAL_SMTP_URL, else mails go to the log")
    serve.add_argument("--mail-from", default=None,
                       help="the console's sender address ($MAGISTRAL_MAIL_FROM)")
    serve.add_argument("--public-url", default=None,
                       help="where people reach this server, for links in mails "
                       "($MAGISTRAL_PUBLIC_URL; default http://HOST:PORT)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", parents=[db], help="create a key and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--account", default=None, help="the owning account (default: 'default')")
    create.add_argument("--rpm", type=_positive_int, default=None,
                        help="requests per minute (default: the tier's)")
    create.add_argument("--tpm", type=_positive_int, default=None,
                        help="tokens per minute (default: the tier's)")
    create.add_argument("--expires", default=None, help="'30d', '12h' or an ISO date (UTC)")
    create.add_argument("--admin", action="store_true", help="may read /metrics")
    listing = keys_sub.add_parser("list", parents=[db], help="list keys (never their secrets)")
    listing.add_argument("--account", default=None)
    revoke = keys_sub.add_parser("revoke", parents=[db], help="revoke a key by id")
    revoke.add_argument("id", type=int)
    keys.set_defaults(func=_keys)

    accounts = sub.add_parser("accounts", help="create, list, suspend and activate accounts")
    accounts_sub = accounts.add_subparsers(dest="accounts_command", required=True)
    new = accounts_sub.add_parser("create", parents=[db], help="create an account")
    new.add_argument("name")
    new.add_argument("--tier", default="standard", help="default limits: standard, scale, enterprise")
    new.add_argument("--status", default="active", choices=["active", "suspended", "pending"])
    accounts_sub.add_parser("list", parents=[db])
    for command in ("suspend", "activate"):
        accounts_sub.add_parser(command, parents=[db]).add_argument("name")
    retier = accounts_sub.add_parser("set-tier", parents=[db], help="move an account to another tier")
    retier.add_argument("name")
    retier.add_argument("tier")
    retier.add_argument("--platform-config", default=None, help="the tiers the server uses")
    grant = accounts_sub.add_parser("operator", parents=[db],
                                    help="let a console user see the operator console")
    grant.add_argument("email")
    grant.add_argument("--revoke", action="store_true")
    accounts.set_defaults(func=_accounts)

    usage = sub.add_parser("usage", parents=[db], help="print an account's invoice for a month")
    usage.add_argument("--account", required=True)
    usage.add_argument("--month", default=None, help="YYYY-MM (default: this month)")
    usage.add_argument("--platform-config", default=None, help="the prices and tiers the server uses")
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(func=_usage)

    chat = sub.add_parser("chat", help="ask a running server one question, streaming the answer")
    chat.add_argument("prompt")
    chat.add_argument("--base-url", default=None, help="default $MAGISTRAL_BASE_URL or "
                      f"http://127.0.0.1:{DEFAULT_PORT}")
    chat.add_argument("--api-key", default=None, help="default $MAGISTRAL_API_KEY")
    chat.add_argument("--model", default="magistral-medium-latest")
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument("--temperature", type=float, default=None)
    chat.set_defaults(func=_chat)

    training = sub.add_parser("train", help="train magistral-mini, the chart-reading vision reasoner")
    stages = training.add_subparsers(dest="stage", required=True)
    sft = stages.add_parser("sft", help="supervised fine-tuning on generated charts with reasoning traces")
    sft.add_argument("--out", required=True, help="run folder: checkpoint, log, plot, and model/ at the end")
    sft.add_argument("--steps", type=_positive_int, default=3000)
    sft.add_argument("--batch-size", type=_positive_int, default=16)
    sft.add_argument("--lr", type=float, default=2e-3)
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument("--minutes", type=float, default=None, help="stop (checkpoint, export) after this long")
    sft.add_argument("--eval-every", type=int, default=500,
                     help="steps between held-out evaluations (0: none)")
    sft.add_argument("--eval-size", type=_positive_int, default=48)
    sft.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    sft.set_defaults(func=_train)
    grpo = stages.add_parser("grpo", help="GRPO from an SFT checkpoint (Magistral's recipe)")
    grpo.add_argument("--init", required=True, help="the model folder to start from (an SFT run's model/)")
    grpo.add_argument("--out", required=True, help="run folder: checkpoint, log, plot, comparison.md, model/")
    grpo.add_argument("--steps", type=_positive_int, default=200)
    grpo.add_argument("--prompts", type=_positive_int, default=8, help="questions per step")
    grpo.add_argument("--group-size", type=_positive_int, default=8, help="sampled answers per question")
    grpo.add_argument("--lr", type=float, default=1e-4)
    grpo.add_argument("--max-tokens", type=_positive_int, default=96)
    grpo.add_argument("--seed", type=int, default=0)
    grpo.add_argument("--minutes", type=float, default=None, help="stop (checkpoint, export) after this long")
    grpo.add_argument("--eval-every", type=int, default=50,
                      help="steps between held-out evaluations (0: none)")
    grpo.add_argument("--eval-size", type=_positive_int, default=48)
    grpo.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    grpo.set_defaults(func=_train_grpo)
    ship = stages.add_parser("ship", help="copy a trained model (bf16) to where `serve` finds it by default")
    ship.add_argument("model", help="a Mistral-format model folder (a run's model/)")
    ship.add_argument("--card", default=None, help="a markdown file kept beside the weights as CARD.md")
    ship.set_defaults(func=_train_ship)

    ev = sub.add_parser("eval", help="run benchmarks against any compatible endpoint")
    from magistral.evals.command import add_arguments
    add_arguments(ev)
    ev.set_defaults(func=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    from magistral.platform.store import StorageError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
