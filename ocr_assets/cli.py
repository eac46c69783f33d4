"""The `ocr-assets` command: thin verbs over the same library the Dagster assets use (imports stay lazy).

Errors: any `OcrAssetsError` (and an unwritable output) is one line `ocr-assets: error: ...` and exit code 2;
exit code 1 means some inputs failed (images, pages, unjudged files) while the others were done; anything else
is one line too, with the traceback only under OCR_ASSETS_DEBUG=1 (docs/ARCHITECTURE.md, "Errors").
Models are found by the one resolver (ocr_assets.models.resolve): --model, else the registry's champion when
a registry exists, else the shipped model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import types
import typing
from pathlib import Path

from ocr_assets.errors import OcrAssetsError, UsageError
from ocr_assets.models.compact.runtime import RUNTIMES

MODEL_HELP = ("model directory, models:/NAME@ALIAS from the MLflow registry, or omitted: the registry's champion "
              "when there is one, else the shipped default")
TRUST_HELP = ("allow a model whose loading runs Python code shipped with it (DeepSeek-OCR v1); only for a source "
              "you trust")
DEBUG_ENV = "OCR_ASSETS_DEBUG"

# Settings fields whose flag is not simply --field-name (names users already know).
FLAG_NAMES = {"learning_rate": "--lr", "synthetic_lines": "--synthetic", "gt_folders": "--gt",
              "architecture": "--model-config", "model_config": "--model-config"}
CHOICES = {"device": ("auto", "cpu", "cuda"), "merge_dtype": ("float16", "bfloat16", "float32")}


def _fail(message: str, code: int = 2) -> int:
    print(f"ocr-assets: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return code


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _folder(value: str, name: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise UsageError(f"{name} {value!r} is not a directory")
    return path


def _progress(label: str):
    def show(p) -> None:
        rate = p.done / p.seconds if p.seconds else 0.0
        print(f"\r{label}: {p.done}/{p.total} ({rate:.1f}/s)", end="" if p.done < p.total else "\n", file=sys.stderr, flush=True)

    return show


def _summary(verb: str, total: int, failed: int, seconds: float, out: str) -> None:
    _note(f"{verb}: {total} inputs, read {total - failed}, failed {failed}, seconds {seconds:.1f} -> {out}")


# --- settings dataclasses -> options ----------------------------------------------------------------------

def _json_value(text: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None


def _option_kind(hint) -> tuple[type, bool]:
    """(scalar type, repeatable) of a settings field's type hint; Optional is unwrapped."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is list:
        return (typing.get_args(hint) or (str,))[0], True
    if hint is dict or typing.get_origin(hint) is dict:
        return dict, False
    return hint, False


def add_settings_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of the settings dataclass `cls`, help from the field's help text. Every option
    defaults to None, so an unset flag keeps the dataclass default (`settings_from_args`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if default not in (None, [], {}):
            help_text += f" (default: {json.dumps(default) if isinstance(default, dict) else default})"
        kind, repeatable = _option_kind(hints[f.name])
        options: dict = {"dest": f"setting_{f.name}", "default": None, "help": help_text,
                         "metavar": flag.lstrip("-").upper().replace("-", "_")}
        if kind is bool:
            options.update(action=argparse.BooleanOptionalAction, metavar=None)
        elif repeatable:
            options.update(action="append", type=kind, help=help_text + " (repeatable)")
        elif kind is dict:
            options.update(type=_json_value, metavar="JSON")
        else:
            options["type"] = kind
        if f.name in CHOICES:
            options.update(choices=CHOICES[f.name], metavar=None)
        parser.add_argument(flag, **options)


def settings_from_args(cls: type, args: argparse.Namespace):
    """The dataclass defaults with the flags the user set (ConfigError, exit 2, on a bad value)."""
    from ocr_assets.settings import replace

    return replace(cls(), **{f.name: getattr(args, f"setting_{f.name}", None) for f in dataclasses.fields(cls)})


# --- models ---------------------------------------------------------------------------------------------

def _registry_uri() -> str | None:
    """The registry to ask for a champion: only one that exists (looking never creates an mlflow.db)."""
    from ocr_assets.storage import Storage

    storage = Storage.from_env()
    return storage.mlflow_uri() if storage.has_local_mlflow_store() else None


def _recognizer(args):
    """The recognizer for --model (explicit > champion > shipped); which one is said on stderr."""
    from ocr_assets.models.compact.runtime import using
    from ocr_assets.models.resolve import load_recognizer, resolve_model

    resolved = resolve_model(args.model, _registry_uri())
    with using(getattr(args, "runtime", None)):
        recognizer = load_recognizer(resolved.path, device=args.device, trust_remote_code=args.trust_remote_code,
                                     keep_ligatures=getattr(args, "keep_ligatures", False))
    _note(f"model: {resolved.source}")
    return recognizer, resolved.source


# --- verbs ----------------------------------------------------------------------------------------------

def cmd_validate(args) -> int:
    from ocr_assets.data.validation import validate_gt_dir

    gt_dir = _folder(args.gt_dir, "GT_DIR")
    report = validate_gt_dir(gt_dir)
    Path(args.report).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    _note(f"accepted {len(report['accepted'])}, quarantined {len(report['quarantined'])} -> {args.report}")
    unjudged = [stem for stem, reason in report["quarantined"].items() if reason.startswith("could not judge")]
    if unjudged:  # the contract: exit 0 only when every file could be judged
        return _fail(f"{len(unjudged)} files could not be judged (e.g. {unjudged[0]!r}); see the report", 1)
    return 0


def _early_feed_pool(device: str, runtime: str | None = None):
    """For a read that may run on a GPU: the decode workers of the batched GPU line path, forked now, while the
    model loads (and before CUDA starts: a smaller process to copy); None when no GPU can be used (or the pool
    cannot start: the read then makes its own)."""
    from ocr_assets.models.compact.runtime import gpu_device_node

    if (runtime or "").startswith("onnx") or not (device.startswith("cuda") or (device == "auto" and gpu_device_node())):
        return None
    from ocr_assets.models.compact.line_feed import FeedPool, default_workers

    pool = FeedPool(default_workers())
    try:
        pool.start()
    except OSError:
        pool.close()
        return None
    return pool


def cmd_recognize(args) -> int:
    from ocr_assets.data.gt_folder import IMAGE_EXTENSIONS
    from ocr_assets.reading import find_images, gpu_files, recognize_dir, streams_on_gpu

    root = _folder(args.images_dir, "IMAGES_DIR")
    start = time.perf_counter()
    paths = find_images(root)
    if not paths:
        Path(args.out).write_text("", encoding="utf-8")
        _summary("recognize", 0, 0, time.perf_counter() - start, args.out)
        return _fail(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}", 1)
    pool = _early_feed_pool(args.device, getattr(args, "runtime", None))
    files = None
    try:
        if pool is not None:  # the first chunk's files read into shared memory and probed while the model loads
            files = gpu_files(paths)
            files[0].read_ahead(pool)
        recognizer, _ = _recognizer(args)
        if pool is not None and not streams_on_gpu(recognizer):  # e.g. no usable CUDA after all: not needed
            pool.close()
            pool = files = None
        total = failed = 0
        with open(args.out, "w", encoding="utf-8") as out:
            for row in recognize_dir(recognizer, root, batch_size=args.batch_size, on_progress=_progress("recognize"),
                                     paths=paths, feed_pool=pool, files=files):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                total += 1
                failed += bool(row.get("error"))
    finally:
        if pool is not None:
            pool.close()
    _summary("recognize", total, failed, time.perf_counter() - start, args.out)
    return 1 if failed else 0


def cmd_evaluate(args) -> int:
    from ocr_assets.data.gt_folder import iter_gt_folder
    from ocr_assets.data.validation import validate_lines
    from ocr_assets.evaluation.evaluate import evaluate_pairs

    gt_dir = _folder(args.gt_dir, "GT_DIR")
    pairs, quarantine = validate_lines(iter_gt_folder(gt_dir))
    if pairs.num_rows == 0:
        return _fail(f"no valid line pairs in {str(gt_dir)!r} ({quarantine.num_rows} quarantined)")
    recognizer, source = _recognizer(args)
    result = evaluate_pairs(recognizer, pairs, batch_size=args.batch_size)
    summary = result.summary()
    summary["quarantined"] = quarantine.num_rows
    summary["model"] = source
    if args.per_document:
        summary["per_document"] = {d: {"cer": round(s.cer, 5), "cer_norm": round(s.cer_norm, 5), "lines": s.lines}
                                   for d, s in result.per_document.items()}
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_conventions(args) -> int:
    from ocr_assets.training.finetune import conventions_gt_dir

    gt_dir = _folder(args.gt_dir, "GT_DIR")
    result = conventions_gt_dir(gt_dir, Path(args.out), base=args.base, log=_note, registry_uri=_registry_uri(),
                                trust_remote_code=args.trust_remote_code)
    print(json.dumps(result, ensure_ascii=False))
    return 0


def cmd_finetune(args) -> int:
    from ocr_assets.settings import FinetuneSettings
    from ocr_assets.training.finetune import finetune_gt_dir

    gt_dir = _folder(args.train_gt_dir, "TRAIN_GT_DIR")
    settings = settings_from_args(FinetuneSettings, args)
    result = finetune_gt_dir(gt_dir, Path(args.out), base=args.base, settings=settings, log=_note,
                             registry_uri=_registry_uri(), trust_remote_code=args.trust_remote_code)
    print(json.dumps(result, ensure_ascii=False))
    return 0


def cmd_pages(args) -> int:
    from ocr_assets.pages.ocr import ocr_page_files, write_page
    from ocr_assets.reading import find_images

    root = _folder(args.pages_dir, "PAGES_DIR")
    start = time.perf_counter()
    paths = find_images(root)
    if not paths:
        _summary("pages", 0, 0, time.perf_counter() - start, args.out)
        return _fail(f"no page images under {str(root)!r}", 1)
    recognizer, _ = _recognizer(args)
    failed = 0
    stems = [p.relative_to(root).with_suffix("") for p in paths]
    # Worker processes decode and segment the next pages while the recognizer reads this one's lines.
    for path, result in ocr_page_files(recognizer, paths, workers=args.workers):
        rel = path.relative_to(root)
        # Two pages that differ only by extension keep their extension in the output names.
        stem = path.name if stems.count(rel.with_suffix("")) > 1 else path.stem
        try:
            if isinstance(result, str):
                raise ValueError(result)
            write_page(result, Path(args.out) / rel.parent, stem)
        except Exception as exc:  # one bad page must not stop the others
            failed += 1
            _note(f"{rel}: skipped: {' '.join(str(exc).split()) or type(exc).__name__}")
            continue
        _note(f"{rel}: {len(result.lines)} lines")
    _summary("pages", len(paths), failed, time.perf_counter() - start, args.out)
    return 1 if failed else 0


def cmd_pretrain(args) -> int:
    from ocr_assets.settings import PretrainSettings
    from ocr_assets.training.pretrain import pretrain

    settings = settings_from_args(PretrainSettings, args)
    for folder in settings.gt_folders:  # before minutes of rendering, not after
        _folder(folder, "--gt")
    info = pretrain(Path(args.out), settings, log=_note)
    print(json.dumps(info, ensure_ascii=False))
    return 0


def cmd_serve(args) -> int:
    import signal

    from ocr_assets.errors import ServingError
    from ocr_assets.serving.server import base_url, check_host, start_server, stop_server, wait_ready

    check_host(args.host, args.allow_remote)

    class Stop(Exception):
        pass

    def on_term(signum, frame):
        raise Stop

    previous = signal.signal(signal.SIGTERM, on_term)  # a plain `kill` stops the server too, not only Ctrl-C
    process = None
    url = base_url(args.host, args.port)
    try:
        process = start_server(args.model, args.port, args.host, workers=args.workers, timeout=args.timeout,
                               allow_remote=args.allow_remote, trust_remote_code=args.trust_remote_code)
        wait_ready(url, timeout=args.ready_timeout, process=process)
        _note(f"serving {args.model} at {url}/invocations (server pid {process.pid}; Ctrl-C stops)")
        code = process.wait()
        return _fail(f"the server exited with code {code}", 1) if code else 0
    except ServingError as exc:
        return _fail(str(exc), 1)
    except Stop:
        return 0
    finally:
        if process is not None:
            stop_server(process)
        signal.signal(signal.SIGTERM, previous)


def cmd_corpus(args) -> int:
    from ocr_assets.corpus.build import process_inbox
    from ocr_assets.corpus.inbox import inbox_url
    from ocr_assets.storage import Storage

    storage = Storage.from_env()
    url = inbox_url(storage, args.inbox)
    recognizer, source = _recognizer(args)
    summary = process_inbox(storage, url, recognizer, progress=lambda done, total: print(
        f"\rcorpus: {done}/{total} pages", end="" if done < total else "\n", file=sys.stderr, flush=True),
        model=source)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def cmd_drift(args) -> int:
    from ocr_assets.monitoring.drift import detect_drift, reset_reference
    from ocr_assets.settings import monitoring_settings_from_env
    from ocr_assets.storage import Storage

    storage = Storage.from_env()
    settings = monitoring_settings_from_env(reference_pages=args.reference_pages, window_pages=args.window_pages)
    if args.reset_reference:
        reset_reference(storage)
        _note("reference window reset: the next pages to arrive form a new one")
    result = detect_drift(storage, settings)
    out = result.to_dict()
    print(json.dumps({k: out[k] for k in ("severity", "reason", "reference_pages", "current_pages", "drifted",
                                          "char_js", "drifted_scans", "report_html", "plot_png")},
                     ensure_ascii=False, indent=1))
    return 0


def cmd_review(args) -> int:
    from ocr_assets.monitoring.review_app import check_loopback, review_queue, server
    from ocr_assets.storage import Storage

    check_loopback(args.host)
    storage = Storage.from_env()
    count = len(review_queue(storage, args.lines))
    if not count:
        raise UsageError("nothing to review: no OCR'd lines under the data root (run `ocr-assets corpus` first)")
    _note(f"review page with {count} lines: http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    server(storage, args.host, args.port, args.lines).run()
    return 0


def cmd_corrections_import(args) -> int:
    from ocr_assets.monitoring.corrections import import_files
    from ocr_assets.storage import Storage

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"{args.path!r} does not exist; give a corrections file (.jsonl, PAGE or ALTO .xml) or a folder")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"{args.path!r} holds no files")
    storage = Storage.from_env()
    report = import_files(storage, [(str(p.relative_to(path)) if path.is_dir() else p.name, p.read_bytes())
                                    for p in files], log=_note)
    print(json.dumps(report.as_dict(), ensure_ascii=False, indent=1))
    return 1 if report.quarantined and not report.accepted else 0


# --- the parser -----------------------------------------------------------------------------------------

def _device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=CHOICES["device"])


def _trust_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)


def _model_options(p: argparse.ArgumentParser) -> None:
    """--model, --device, --trust-remote-code, --keep-ligatures and --runtime, the same for every verb that reads with
    a model."""
    p.add_argument("--model", default=None, help=MODEL_HELP)
    _device_option(p)
    _trust_option(p)
    p.add_argument("--keep-ligatures", action="store_true", help="write honorific ligatures as their Unicode "
                   "character (ﷺ) instead of the expansion the model's book uses (conventions.json)")
    p.add_argument("--runtime", default=None, choices=RUNTIMES, help="engine for a compact model: auto (default, "
                   "or $OCR_ASSETS_RUNTIME) = ONNX Runtime int8 on a CPU (graph exported once, cached by weights hash "
                   "under $OCR_ASSETS_CACHE_DIR or ~/.cache/ocr_assets), torch on CUDA")


def build_parser() -> argparse.ArgumentParser:
    from ocr_assets.settings import FinetuneSettings, PretrainSettings

    parser = argparse.ArgumentParser(prog="ocr-assets", description="OCR of classical Arabic print: validate, "
                                     "recognize, evaluate, finetune. Exit codes: 0 done, 1 some inputs failed, "
                                     "2 usage or configuration error.")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("validate", help="judge a ground-truth folder: accepted pairs and quarantined items with reasons")
    p.add_argument("gt_dir")
    p.add_argument("--report", required=True, help="JSON report path")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("recognize", help="OCR every line image under a folder into JSONL")
    p.add_argument("images_dir")
    p.add_argument("--out", required=True, help="JSONL output path")
    _model_options(p)
    p.add_argument("--batch-size", type=int, default=None,
                   help="lines per batch (default 64; 1024 on a CUDA GPU, where the batched line path reads)")
    p.set_defaults(func=cmd_recognize)

    p = sub.add_parser("evaluate", help="score a model on a ground-truth folder (JSON: cer, cer_norm, wer, lines, lines_per_s)")
    p.add_argument("gt_dir")
    _model_options(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--per-document", action="store_true", help="add per-document scores")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("finetune", help="LoRA fine-tune on a ground-truth folder and write a merged model directory")
    p.add_argument("train_gt_dir")
    p.add_argument("--out", required=True, help="output model directory (usable as --model)")
    p.add_argument("--base", default=None, help=MODEL_HELP)
    _trust_option(p)
    add_settings_options(p, FinetuneSettings)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("conventions", help="learn a book's transcription conventions (honorific ligatures, digits, "
                       "vowel marks) from its line pairs without training: the base model with conventions.json")
    p.add_argument("gt_dir")
    p.add_argument("--out", required=True, help="output model directory (usable as --model)")
    p.add_argument("--base", default=None, help=MODEL_HELP)
    _trust_option(p)
    p.set_defaults(func=cmd_conventions)

    p = sub.add_parser("pages", help="OCR whole printed pages: <stem>.txt, <stem>.page.xml (PAGE 2019), <stem>.alto.xml (ALTO 4)")
    p.add_argument("pages_dir")
    p.add_argument("--out", required=True, help="output folder")
    _model_options(p)
    p.add_argument("--workers", type=int, default=None, help="processes decoding and segmenting pages while the "
                   "model reads (default: one per core; 0: all in this process)")
    p.set_defaults(func=cmd_pages)

    p = sub.add_parser("corpus", help="OCR the new scans of the inbox once (no Dagster daemon) and rebuild the corpus "
                       "under the data root: corpus.txt, corpus.jsonl, review.jsonl, quarantine.json")
    p.add_argument("--inbox", default=None, help="folder or fsspec URL (default: $OCR_ASSETS_INBOX or <data root>/inbox)")
    _model_options(p)
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("pretrain", help="pretrain a compact recognizer on synthetic lines (+ GT folders); for multi-GPU "
                       "use torchrun -m ocr_assets.models.compact.train")
    p.add_argument("--out", required=True, help="output model directory")
    add_settings_options(p, PretrainSettings)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("serve", help="REST server (MLflow's scoring server) for a registered model: POST /invocations "
                       "with base64 line or page images")
    p.add_argument("--model", default="models:/ocr-assets-recognizer@champion", help="registry URI or model folder "
                   "of an MLflow pyfunc (default: the champion)")
    p.add_argument("--port", type=int, default=5001)
    p.add_argument("--host", default="127.0.0.1", help="loopback only unless --allow-remote")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback interface")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--timeout", type=int, default=None, help="seconds per request before HTTP 504 (MLflow: 60)")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for the model to load")
    _trust_option(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("drift", help="compare the latest OCR'd pages with the reference window (image and reading "
                       "statistics): severity, drifted statistics and scans, an HTML report")
    p.add_argument("--reset-reference", action="store_true", help="forget the reference window first; the next "
                   "pages form a new one (after a new champion or a new collection)")
    p.add_argument("--reference-pages", type=int, default=None, help="pages of the reference window (default: "
                   "MonitoringSettings)")
    p.add_argument("--window-pages", type=int, default=None, help="pages of the current window (default: MonitoringSettings)")
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("review", help="serve the review page on 127.0.0.1: least-confident line images beside editable "
                       "text; Submit saves corrections into the corrections inbox")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1", help="loopback only")
    p.add_argument("--lines", type=int, default=50, help="lines on the page")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("corrections", help="people's corrections of OCR'd lines")
    csub = p.add_subparsers(dest="corrections_verb", required=True)
    q = csub.add_parser("import", help="import corrected PAGE/ALTO XML or JSONL {line_id, text} (a file or a folder): "
                        "matched to OCR'd lines, validated, bad ones quarantined with a reason (JSON report)")
    q.add_argument("path")
    q.set_defaults(func=cmd_corrections_import)
    return parser


def _quiet_libraries() -> None:
    # Library warnings and MLflow's store set-up chatter would bury the one line a user needs.
    import logging
    import warnings

    if not os.environ.get(DEBUG_ENV):
        warnings.simplefilter("ignore")
        for name in ("mlflow", "alembic", "transformers", "peft"):
            logging.getLogger(name).setLevel(logging.ERROR)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    debug = bool(os.environ.get(DEBUG_ENV))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except OcrAssetsError as exc:
        if debug:
            raise
        return _fail(str(exc) or type(exc).__name__)
    except OSError as exc:  # unwritable --out / --report, missing parent folder
        if debug:
            raise
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except Exception as exc:  # noqa: BLE001 - one line for the user; the traceback is one variable away
        if debug:
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)")


def run() -> None:
    """The `ocr-assets` command: main(), then leave without the interpreter's teardown once the output is flushed.

    Native thread pools (Arrow's) can abort a finished process while Python tears down ("terminate called without
    an active exception", exit -6; apache/arrow#34314), turning a verb that did its work into a failure; nothing
    the verbs need runs at teardown (every file, run and child process is closed before main() returns)."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    logging.shutdown()
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    run()
