"""What fsdd_loso.py and ablate.py share: train a variant of a recipe (a config with
overrides) and score its model on some of its sets, greedy and with beam search + the
recipe's word LM."""

from __future__ import annotations

import time


def variant(config, overrides: list[str], budget_min: float = 0.0, track: bool = True):
    """The recipe ``config`` (a YAML path) with ``overrides``, trained within ``budget_min``
    minutes (0: the recipe's budget), tracked in MLflow unless ``track`` is false."""
    from speechrnn.config import load_pipeline_config

    extra = [f"train.time_budget_min={budget_min}"] if budget_min else []
    return load_pipeline_config(config, [*overrides, *extra,
                                         *([] if track else ["tracking.enabled=false"])])


def train_and_score(cfg, sets: dict[str, str], corpora: str | None) -> dict:
    """Run the recipe ``cfg`` (:func:`speechrnn.recipe.run_recipe`: data prepared or kept,
    training run or resumed, a finished one kept as it is; its evaluation as the recipe
    decodes, the LM weights tuned on dev when it lists values to try) and score the model
    on each manifest ``name`` of ``sets`` (``{name: label}``):
    ``<label>_<greedy|beam>_<wer|cer>`` and ``<label>_utterances``, in percent, with
    ``epochs``, ``best_epoch``, ``train_min``, ``wall_min`` and ``kept`` (the training had
    finished before this call: only scored again)."""
    from speechrnn.checkpoint import finished
    from speechrnn.recipe import run_recipe

    start = time.monotonic()
    kept = finished(cfg.workdir)
    done = run_recipe(cfg, ("prepare", "train", "evaluate"), corpora, progress=False,
                      sets=list(sets), say=lambda text: None)
    result = done.training
    row = {"epochs": len(result.history), "best_epoch": result.best_epoch + 1,
           "train_min": round(sum(h.get("epoch_seconds", 0.0) for h in result.history) / 60,
                              1),
           "kept": kept}
    for name, label in sets.items():
        for decoding, report in done.reports[name].items():
            method = "greedy" if decoding == "greedy" else "beam"
            row[f"{label}_{method}_wer"] = round(100 * report.rates.wer, 2)
            row[f"{label}_{method}_cer"] = round(100 * report.rates.cer, 2)
            row[f"{label}_utterances"] = report.rates.utterances
    row["wall_min"] = round((time.monotonic() - start) / 60, 1)
    return row
