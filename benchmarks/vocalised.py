"""Vocalised text: CER with tashkeel kept, on fully vocalised synthetic lines in a font left out of training.

The font (ocr_assets.training.pretrain.HELDOUT_FONTS, Scheherazade) never appeared in pretraining; the lines are rendered
here with a seed the pretraining never used. Ours (the shipped model, CPU) beside Tesseract --psm 13, same files.

    .venv/bin/python benchmarks/vocalised.py [--lines 200] [--model NAME=DIR ...] [--faces Scheherazade,Amiri,...]
        [--text quran|synthetic|arramooz]

`--text quran`: the Qurʾān text the model trained on (the line sampler without its generated pseudo-words), an
unseen seed. `--text synthetic`: the training sampler as it is (30 % of lines mostly generated pseudo-words).

`--text arramooz`: a text source held out of all training — lines of 6-10 fully vocalised words drawn from the
Arramooz Arabic dictionary (nouns and verbs as the dictionary vowels them; GPL; `pip install arramooz-pysqlite`,
read from the installed package at run time, nothing of it in this repository). Dictionary words in random order:
no sentence context, other vocabulary and forms than the Qurʾān text the model trained on.

Other engines (Kraken): `--save-lines DIR` keeps the rendered lines as DIR/<Face>/<nnnnn>.png + .gt.txt (same seed,
same lines every time); read them elsewhere, e.g. `.kraken/venv/bin/python benchmarks/kraken/read_kraken.py --model
M --out K.json --dir DIR/<Face>` per face, and `--readings "Kraken 7.1.1=K.json"` (repeatable, several JSON files
joined with commas) scores those readings as a row beside ours, matched by face folder and file name. Kraken
returns display order on some lines: where the JSON also holds `bidi_R` (its own bidi re-run), the better of the
two orders is scored and named, as benchmarks/kraken/score.py does. A Kraken trained on the bilevel book lines reads these
greyscale renderings far worse than the same lines binarised: `read_kraken.py --binarize` (Kraken's nlbin) gives
the row a Kraken user would get (both measured in README, "Vocalised text").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import tesseract_many, tesseract_version  # noqa: E402

from ocr_assets import metrics  # noqa: E402
from ocr_assets.data.gt_folder import TEXT_SUFFIX  # noqa: E402
from ocr_assets.synth.fonts import discover_fonts  # noqa: E402
from ocr_assets.synth.lines import iter_synthetic_lines, use_sampler  # noqa: E402
from ocr_assets.synth.text import PATTERN_SHARE, LineSampler  # noqa: E402
from ocr_assets.models.resolve import load_recognizer  # noqa: E402
from ocr_assets.training.pretrain import HELDOUT_FONTS  # noqa: E402


def render_face(fonts, lines: int, seed: int, folder: Path) -> tuple[list[Path], list[str]]:
    paths, refs = [], []
    folder.mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(iter_synthetic_lines(lines, seed, fonts=fonts, vocalised_fraction=1.0)):
        p = folder / f"{i:05d}.png"
        p.write_bytes(raw.image)
        paths.append(p)
        refs.append(raw.text_bytes.decode("utf-8"))
    return paths, refs


def arramooz_words() -> tuple[list[str], list[str]]:
    """(nouns, verbs) as vocalised in the installed arramooz-pysqlite package's dictionary."""
    import importlib.util
    import sqlite3

    spec = importlib.util.find_spec("arramooz")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--text arramooz needs the Arramooz dictionary: .venv/bin/pip install arramooz-pysqlite")
    db = Path(list(spec.submodule_search_locations)[0]) / "data" / "arabicdictionary.sqlite"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        nouns = [r[0] for r in con.execute("select vocalized from nouns where vocalized != ''")]
        verbs = [r[0] for r in con.execute("select vocalized from verbs where vocalized != ''")]
    finally:
        con.close()
    return nouns, verbs


def render_heldout_text(fonts, lines: int, seed: int, folder: Path) -> tuple[list[Path], list[str]]:
    """Lines of the held-out text source (Arramooz words, 70 % nouns), drawn like the synthetic lines."""
    import random

    from ocr_assets.synth.lines import render_line

    nouns, verbs = arramooz_words()
    folder.mkdir(parents=True, exist_ok=True)

    def sample(rng: random.Random) -> str:
        return " ".join(rng.choice(nouns) if rng.random() < 0.7 else rng.choice(verbs) for _ in range(rng.randint(6, 10)))

    paths, refs, attempt = [], [], 0
    while len(paths) < lines:
        if attempt > 50 * lines:
            raise SystemExit(f"the faces {[f.name for f in fonts]} cover too few Arramooz lines ({len(paths)} of "
                             f"{attempt} drawn); pick a face with fuller Arabic coverage")
        rng = random.Random(f"vocalised-heldout-text:{seed}:{attempt}")
        attempt += 1
        text = sample(rng)
        covering = [f for f in fonts if f.covers(text)]
        if not covering:  # a word with a letter the face lacks: draw another line
            continue
        image = render_line(text, rng.choice(covering), rng, neighbours=(sample(rng), sample(rng)))
        paths.append(folder / f"{len(paths):05d}.png")
        image.save(paths[-1])
        refs.append(text)
    return paths, refs


def _line_key(path: str | Path) -> str:
    """A saved line as "<face folder>/<file name>": the same on the machine that rendered it and the one that read it."""
    return "/".join(Path(path).parts[-2:])


def engine_readings(spec: str) -> tuple[str, dict[str, dict[str, str]]]:
    """NAME=A.json[,B.json]: an engine's readings keyed by "<face folder>/<file name>", per order ("as returned",
    and "bidi_R" where the JSON has it)."""
    name, _, files = spec.partition("=")
    if not name or not files:
        raise SystemExit(f"--readings {spec!r}: give NAME=FILE.json[,FILE.json]")
    orders: dict[str, dict[str, str]] = {"as returned": {}}
    for file in files.split(","):
        try:
            raw = json.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--readings {file!r}: {exc}") from None
        for order, key in (("as returned", "lines"), ("bidi_R", "bidi_R")):
            for path, text in (raw.get(key) or {}).items():
                orders.setdefault(order, {})[_line_key(path)] = text
    return name, orders


def score_readings(name: str, orders: dict[str, dict[str, str]], paths: list[Path], refs: list[str]):
    """The engine's row for one face: the better order, named; None when it read none of these lines."""
    keys = [_line_key(p) for p in paths]
    scored = {}
    for order, texts in orders.items():
        missing = sum(k not in texts for k in keys)
        if missing == len(keys):  # this engine did not read this face
            continue
        if missing:
            raise SystemExit(f"--readings {name!r} ({order}): {missing} of {len(keys)} lines of "
                             f"{paths[0].parent.name} are missing")
        scored[order] = metrics.score(refs, [texts[k] for k in keys])
    if not scored:
        return None
    best = min(scored, key=lambda o: scored[o].cer)
    label = name if len(scored) == 1 else f"{name} ({best}; " + ", ".join(
        f"{o} CER {sc.cer:.4f}" for o, sc in scored.items()) + ")"
    return label, scored[best]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200, help="lines per face")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--model", action="append", default=None,
                    help="NAME=DIR (repeatable); default: the shipped model")
    ap.add_argument("--faces", default=",".join(HELDOUT_FONTS[:1]),
                    help="comma-separated font families or names, one table row each (default: the held-out face)")
    ap.add_argument("--skip-tesseract", action="store_true")
    ap.add_argument("--save-lines", help="keep the rendered lines (PNG + .gt.txt) under this folder, one folder a face")
    ap.add_argument("--readings", action="append", default=[],
                    help="NAME=FILE.json[,FILE.json]: another engine's readings of the saved lines (read_kraken.py's "
                         "JSON), scored as a row")
    ap.add_argument("--text", choices=("quran", "synthetic", "arramooz"), default="quran",
                    help="quran: the training text source (an unseen seed); synthetic: the training sampler with its "
                         "pseudo-words; arramooz: a text source held out of all training")
    args = ap.parse_args()
    use_sampler(LineSampler(pattern_share=PATTERN_SHARE if args.text == "synthetic" else 0.0))
    models = dict(m.split("=", 1) for m in (args.model or ["ours (shipped compact)=default"]))
    installed = discover_fonts()
    held_out = {f.name for f in installed if f.name in HELDOUT_FONTS or f.family in HELDOUT_FONTS}
    readings = [engine_readings(spec) for spec in args.readings]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.save_lines) if args.save_lines else Path(tmp)
        faces = []
        for face in [f.strip() for f in args.faces.split(",") if f.strip()]:
            fonts = [f for f in installed if face in (f.name, f.family)]
            if not fonts:
                raise SystemExit(f"font {face!r} is not installed (Debian: fonts-sil-scheherazade, fonts-hosny-amiri, "
                                 "fonts-noto-core, fonts-sil-lateef)")
            render = render_heldout_text if args.text == "arramooz" else render_face
            paths, refs = render(fonts, args.lines, args.seed, root / face.replace(" ", "_"))
            if args.save_lines:
                for path, ref in zip(paths, refs):
                    path.with_suffix(TEXT_SUFFIX).write_text(ref + "\n", encoding="utf-8")
            role = "held out of all training" if all(f.name in held_out for f in fonts) else "in the training fonts"
            faces.append((face, role, paths, refs))
        for name, model in models.items():
            rec = load_recognizer(None if model == "default" else model, device="cpu")
            for face, role, paths, refs in faces:
                ours = [r.text for r in rec.recognize([p.read_bytes() for p in paths], batch_size=32)]
                rows.append((face, role, name, metrics.score(refs, ours)))
        for name, orders in readings:
            for face, role, paths, refs in faces:
                scored = score_readings(name, orders, paths, refs)
                if scored is not None:
                    rows.append((face, role, *scored))
        if not args.skip_tesseract:
            for face, role, paths, refs in faces:
                tess, _ = tesseract_many(paths, psm=13)
                rows.append((face, role, f"Tesseract ara ({tesseract_version()} --psm 13)", metrics.score(refs, tess)))
    source = {"arramooz": "Arramooz dictionary words (a text source held out of all training)",
              "quran": "the Qurʾān text of the synthetic line sampler (the training text source)",
              "synthetic": "the synthetic line sampler's, pseudo-words included (the training text sources)"}[args.text]
    print(f"Vocalised lines (every letter vowelled), {args.lines} lines per face, seed {args.seed}; the text is "
          f"{source}\n")
    print("| face | face in training? | system | CER (tashkeel kept) | CER_norm | WER |")
    print("|---|---|---|---|---|---|")
    for face, role, name, s in sorted(rows, key=lambda r: (r[0], r[2])):
        print(f"| {face} | {role} | {name} | {s.cer:.4f} | {s.cer_norm:.4f} | {s.wer:.4f} |")


if __name__ == "__main__":
    main()
