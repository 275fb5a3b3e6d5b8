"""Take one trial out of a study: its resolved spec and its recipe as two files that
``archspace train SPEC --config RECIPE`` trains again, unchanged or at another scale.

The spec is renamed after the study and trial (``quickstart-trial-7``); the name does not
enter the trial's hash, so the files still hash to the trial's key (checked before writing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from ..spec import dump_spec, validate
from ..train.config import load_config
from .rundir import open_study
from .runner import summarize
from .space import spec_hash

SPEC_FILE = "spec.yaml"
RECIPE_FILE = "recipe.yaml"


def export_trial(run_dir: Path, out_dir: Path, *, trial: int | None = None, storage: str | None = None,
                 study: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write trial ``trial`` (default: the best finished one) of the study in ``run_dir`` to
    ``out_dir/spec.yaml`` and ``out_dir/recipe.yaml``.

    Returns:
        ``{"study", "trial", "name", "key", "eval_error", "spec", "recipe", "command"}``.

    Raises:
        SpecError: no such trial, a trial that was never trained (rejected, duplicate,
            waiting), a record that no longer validates, or files already there.
    """
    ostudy = open_study(run_dir, storage, study)
    records = {r["number"]: r for r in summarize(ostudy)["trials"]}
    if trial is None:
        best = summarize(ostudy)["best"]
        if best is None:
            raise SpecError.single("--best", f"study {ostudy.study_name!r} has no finished trial yet")
        trial = best["number"]
    if trial not in records:
        raise SpecError.single("--trial", f"study {ostudy.study_name!r} has no trial {trial} "
                                          f"(trials 0 to {max(records, default=-1)})")
    attrs = next(t for t in ostudy.get_trials(deepcopy=False) if t.number == trial).user_attrs
    record = records[trial]
    if record["status"] == "duplicate":
        raise SpecError.single("--trial", f"trial {trial} duplicates trial {record['duplicate_of']} and was not "
                                          f"trained: export trial {record['duplicate_of']}")
    if "spec" not in attrs or "train" not in attrs:
        why = f": {record['reason']}" if record.get("reason") else ""
        raise SpecError.single("--trial", f"trial {trial} is {record['status']} and has no resolved spec{why}")
    name = f"{ostudy.study_name}-trial-{trial}"
    spec = validate({**attrs["spec"], "name": name})
    recipe = load_config(**attrs["train"])
    key = spec_hash(spec, recipe)
    if attrs.get("key") and key != attrs["key"]:
        raise SpecError.single("--trial", f"trial {trial}'s record hashes to {key}, but the store keys it "
                                          f"{attrs['key']}: the record was made by another archspace version")
    out_dir = Path(out_dir)
    files = (out_dir / SPEC_FILE, out_dir / RECIPE_FILE)
    there = [str(f) for f in files if f.exists()]
    if there and not overwrite:
        raise SpecError.single("--out", f"{', '.join(there)} already exist; choose another --out or pass --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    error = record.get("eval_error")
    header = (f"# Trial {trial} of study {ostudy.study_name!r} ({record['status']}"
              + (f", eval error {100 * error:.2f}%" if error is not None else "") + f"), key {key}.\n")
    files[0].write_text(header + dump_spec(spec))
    files[1].write_text(header + "# Train it again: archspace train " + f"{files[0]} --config {files[1]}\n"
                        + yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    return {"study": ostudy.study_name, "trial": trial, "name": name, "key": key, "status": record["status"],
            "eval_error": error, "spec": str(files[0]), "recipe": str(files[1]),
            "command": f"archspace train {files[0]} --config {files[1]}"}

