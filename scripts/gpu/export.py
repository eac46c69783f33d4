"""Copy a training run's best weights (model/, else checkpoints/best, else checkpoints/last) as fp16 into a folder."""

import sys
from pathlib import Path

from safetensors.torch import load_model

from ocr_assets.models.compact import CompactOCRConfig, CompactOCRModel, CompactRecognizer


def best_model(run: Path) -> CompactOCRModel:
    if (run / "model" / "config.json").is_file():
        return CompactOCRModel.from_pretrained(run / "model")
    ckpts = run / "checkpoints"
    config = next((ckpts / n / "config.json" for n in ("best", "last", "last.old") if (ckpts / n / "config.json").is_file()), None)
    weights = next((ckpts / n / "model.safetensors" for n in ("best", "last", "last.old") if (ckpts / n / "model.safetensors").is_file()), None)
    if config and weights:
        model = CompactOCRModel(CompactOCRConfig.from_json_file(str(config)))
        load_model(model, str(weights))
        print("weights from", weights)
        return model
    raise SystemExit(f"no model in {run}")


if __name__ == "__main__":
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    CompactRecognizer(best_model(run), device="cpu").save(out)
    print("exported", run, "->", out)
