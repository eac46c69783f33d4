"""The promotion gate: a challenger becomes champion only when it beats the champion, re-scored on the same split,
or, on an empty registry, the base model it was fine-tuned from (lower CER_norm is better)."""

from __future__ import annotations

from dataclasses import dataclass

from ocr_assets.registry import CHAMPION, Registry


UNCHECKED = object()  # promote_if_better without a scored champion version: no moved-champion check


@dataclass
class Decision:
    promoted: bool
    reason: str
    challenger_version: str | None = None
    champion_version: str | None = None


def decide(challenger: float, champion: float | None, base: float | None, min_gain: float = 0.0) -> Decision:
    """Promote when challenger < reference - min_gain; the reference is the champion, else the base model."""
    if min_gain < 0:
        from ocr_assets.errors import ConfigError

        raise ConfigError(f"min_gain {min_gain} must be >= 0")
    if champion is not None:
        reference, name = champion, "champion"
    elif base is not None:
        reference, name = base, "base model (no champion yet)"
    else:
        return Decision(True, f"challenger {challenger:.4f}: no champion and no base score to compare with")
    if challenger < reference - min_gain:
        return Decision(True, f"challenger {challenger:.4f} beats {name} {reference:.4f} (min gain {min_gain})")
    return Decision(False, f"challenger {challenger:.4f} does not beat {name} {reference:.4f} by {min_gain}")


def promote_if_better(registry: Registry, challenger_version: str, challenger: float, champion: float | None,
                      base: float | None, min_gain: float = 0.0, scored_champion: str | None | object = UNCHECKED) -> Decision:
    """Apply `decide` to the registry: move the champion alias to the challenger when it wins.

    `scored_champion` is the champion version whose score is `champion` (None: there was no champion). Two runs
    evaluated at once both scored the same champion; the check and the alias move happen under the registry's
    lock, and a challenger whose champion moved meanwhile stays challenger (it was never compared with the new
    one), so a worse model cannot overwrite a better one that was promoted a moment earlier.
    """
    decision = decide(challenger, champion, base, min_gain)
    decision.challenger_version = challenger_version
    with registry.lock():
        current = registry.alias_version(CHAMPION)
        decision.champion_version = current
        if scored_champion is not UNCHECKED and current != scored_champion and current != challenger_version:
            decision.promoted = False
            decision.reason = (f"the champion moved from {scored_champion or 'none'} to {current} while version "
                               f"{challenger_version} was evaluated; it stays challenger (evaluate it again to "
                               f"compare with the new champion)")
        elif decision.promoted:
            registry.set_alias(CHAMPION, challenger_version)
    return decision
