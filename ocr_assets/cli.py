"""The `ocr-assets` command: thin verbs over the same library the Dagster assets use (imports stay lazy)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ocr_assets.errors import OcrAssetsError, UsageError

MODEL_HELP = "model directory, models:/NAME@ALIAS from the MLflow registry, or omitted for the shipped default"


def _fail(message: str, code: int = 2) -> int:
    print(f"ocr-assets: error: {message}", file=sys.stderr)
    return code


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


def cmd_validate(args) -> int:
    from ocr_assets.data.validation import validate_gt_dir

    gt_dir = _folder(args.gt_dir, "GT_DIR")
    report = validate_gt_dir(gt_dir)
    Path(args.report).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"accepted {len(report['accepted'])}, quarantined {len(report['quarantined'])} -> {args.report}", file=sys.stderr)
    unjudged = [stem for stem, reason in report["quarantined"].items() if reason.startswith("could not judge")]
    if unjudged:  # the contract: exit 0 only when every file could be judged
        return _fail(f"{len(unjudged)} files could not be judged (e.g. {unjudged[0]!r}); see the report", 1)
    return 0


def cmd_recognize(args) -> int:
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.reading import recognize_dir

    root = _folder(args.images_dir, "IMAGES_DIR")
    recognizer = load_recognizer(args.model, device=args.device)
    n = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for row in recognize_dir(recognizer, root, batch_size=args.batch_size, on_progress=_progress("recognize")):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    print(f"{n} images -> {args.out}", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from ocr_assets.data.gt_folder import iter_gt_folder
    from ocr_assets.data.validation import validate_lines
    from ocr_assets.evaluation.evaluate import evaluate_pairs
    from ocr_assets.models.resolve import load_recognizer

    gt_dir = _folder(args.gt_dir, "GT_DIR")
    pairs, quarantine = validate_lines(iter_gt_folder(gt_dir))
    if pairs.num_rows == 0:
        return _fail(f"no valid line pairs in {str(gt_dir)!r} ({quarantine.num_rows} quarantined)")
    recognizer = load_recognizer(args.model, device=args.device)
    result = evaluate_pairs(recognizer, pairs, batch_size=args.batch_size)
    summary = result.summary()
    summary["quarantined"] = quarantine.num_rows
    if args.per_document:
        summary["per_document"] = {d: {"cer": round(s.cer, 5), "cer_norm": round(s.cer_norm, 5), "lines": s.lines}
                                   for d, s in result.per_document.items()}
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_finetune(args) -> int:
    from ocr_assets.training.finetune import FinetuneSettings, finetune_gt_dir

    gt_dir = _folder(args.train_gt_dir, "TRAIN_GT_DIR")
    settings = FinetuneSettings(epochs=args.epochs, rank=args.rank, learning_rate=args.lr, device=args.device)
    result = finetune_gt_dir(gt_dir, Path(args.out), base=args.base, settings=settings, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result, ensure_ascii=False))
    return 0


def cmd_pages(args) -> int:
    from ocr_assets.data.images import decode_line_image
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.reading import find_images
    from ocr_assets.pages.ocr import ocr_page, write_page

    root = _folder(args.pages_dir, "PAGES_DIR")
    recognizer = load_recognizer(args.model, device=args.device)
    failed = 0
    paths = find_images(root)
    stems = [p.relative_to(root).with_suffix("") for p in paths]
    for path in paths:
        rel = path.relative_to(root)
        # Two pages that differ only by extension keep their extension in the output names.
        stem = path.name if stems.count(rel.with_suffix("")) > 1 else path.stem
        try:
            page = decode_line_image(path.read_bytes())
            result = ocr_page(recognizer, page, rel.name)
            write_page(result, Path(args.out) / rel.parent, stem)
        except Exception as exc:  # one bad page must not stop the others
            failed += 1
            print(f"{rel}: skipped: {exc}", file=sys.stderr)
            continue
        print(f"{rel}: {len(result.lines)} lines", file=sys.stderr)
    return 1 if failed else 0


def cmd_pretrain(args) -> int:
    from ocr_assets.training.pretrain import pretrain

    info = pretrain(Path(args.out), synthetic_lines=args.synthetic, seed=args.seed, gt_folders=tuple(args.gt),
                    real_repeat=args.real_repeat, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                    init=args.init, device=args.device, model_config=json.loads(args.model_config),
                    log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(info, ensure_ascii=False))
    return 0


def cmd_serve(args) -> int:
    import signal

    from ocr_assets.serving.server import ServingError, base_url, check_host, start_server, stop_server, wait_ready

    try:
        check_host(args.host, args.allow_remote)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    class Stop(Exception):
        pass

    def on_term(signum, frame):
        raise Stop

    previous = signal.signal(signal.SIGTERM, on_term)  # a plain `kill` stops the server too, not only Ctrl-C
    process = None
    url = base_url(args.host, args.port)
    try:
        process = start_server(args.model, args.port, args.host, workers=args.workers, timeout=args.timeout,
                               allow_remote=args.allow_remote)
        wait_ready(url, timeout=args.ready_timeout, process=process)
        print(f"serving {args.model} at {url}/invocations (server pid {process.pid}; Ctrl-C stops)",
              file=sys.stderr, flush=True)
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
    from ocr_assets.models.resolve import load_recognizer
    from ocr_assets.corpus.build import process_inbox
    from ocr_assets.corpus.inbox import inbox_url

    url = args.inbox or inbox_url()
    recognizer = load_recognizer(args.model, device=args.device)
    summary = process_inbox(url, recognizer, progress=lambda done, total: print(
        f"\rcorpus: {done}/{total} pages", end="" if done < total else "\n", file=sys.stderr, flush=True),
        model=args.model or "shipped default")
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


def _device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _model_options(p: argparse.ArgumentParser) -> None:
    """--model and --device, the same for every verb that reads with a model."""
    p.add_argument("--model", default=None, help=MODEL_HELP)
    _device_option(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocr-assets", description="OCR of classical Arabic print: validate, recognize, evaluate, finetune.")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("validate", help="judge a ground-truth folder: accepted pairs and quarantined items with reasons")
    p.add_argument("gt_dir")
    p.add_argument("--report", required=True, help="JSON report path")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("recognize", help="OCR every line image under a folder into JSONL")
    p.add_argument("images_dir")
    p.add_argument("--out", required=True, help="JSONL output path")
    _model_options(p)
    p.add_argument("--batch-size", type=int, default=64)
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
    p.add_argument("--epochs", type=int, default=None, help="default: chosen from the number of lines")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--lr", type=float, default=None)
    _device_option(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("pages", help="OCR whole printed pages: <stem>.txt, <stem>.page.xml (PAGE 2019), <stem>.alto.xml (ALTO 4)")
    p.add_argument("pages_dir")
    p.add_argument("--out", required=True, help="output folder")
    _model_options(p)
    p.set_defaults(func=cmd_pages)

    p = sub.add_parser("corpus", help="OCR the new scans of the inbox once (no Dagster daemon) and rebuild the corpus "
                       "under the data root: corpus.txt, corpus.jsonl, review.jsonl, quarantine.json")
    p.add_argument("--inbox", default=None, help="folder or fsspec URL (default: $OCR_ASSETS_INBOX or <data root>/inbox)")
    _model_options(p)
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("pretrain", help="pretrain a compact recognizer on synthetic lines (+ GT folders); for multi-GPU "
                       "use torchrun -m ocr_assets.models.compact.train")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--synthetic", type=int, default=20000, help="synthetic lines to render (held-out fonts excluded)")
    p.add_argument("--gt", action="append", default=[], help="a ground-truth folder of real lines (repeatable)")
    p.add_argument("--real-repeat", type=int, default=3)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--init", default=None, help="start from this model instead of from scratch")
    p.add_argument("--model-config", default="{}", help="JSON overrides of CompactOCRConfig (from scratch only)")
    _device_option(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("serve", help="REST server (mlflow models serve) for a registered model: POST /invocations "
                       "with base64 line or page images")
    p.add_argument("--model", default="models:/ocr-assets-recognizer@champion", help="registry URI or model folder "
                   "of an MLflow pyfunc (default: the champion)")
    p.add_argument("--port", type=int, default=5001)
    p.add_argument("--host", default="127.0.0.1", help="loopback only unless --allow-remote")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback interface")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--timeout", type=int, default=None, help="seconds per request before HTTP 504 (MLflow: 60)")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for the model to load")
    p.set_defaults(func=cmd_serve)
    return parser


def _quiet_libraries() -> None:
    # Library warnings and MLflow's store set-up chatter would bury the one line a user needs.
    import logging
    import os
    import warnings

    if not os.environ.get("OCR_ASSETS_DEBUG"):
        warnings.simplefilter("ignore")
        for name in ("mlflow", "alembic", "transformers", "peft"):
            logging.getLogger(name).setLevel(logging.ERROR)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    from ocr_assets.models.base import ModelError

    try:
        return args.func(args)
    except (ModelError, UsageError) as exc:
        return _fail(str(exc))
    except OSError as exc:  # unwritable --out / --report, missing parent folder
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
