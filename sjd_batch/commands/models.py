"""`sjd-batch models`: every registered family and model with its defaults (from
`sjd_batch.models.registry`; nothing is loaded or imported beyond the registry itself)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from sjd_batch.models.registry import FAMILIES, MODELS, Defaults

COLUMNS = ("name", "kind", "family", "tokens/image", "res", "window", "top-k", "cfg", "loads from")


def rows() -> list[dict[str, Any]]:
    """One row per family, then one per registered model."""
    out = []
    for family in FAMILIES.values():
        out.append(_row(family.name, "family", family.name, family.defaults, family.loads_from,
                        family.summary, loader=family.loader, options=list(family.options),
                        hf_model_types=list(family.hf_model_types)))
    for model in MODELS.values():
        loads = model.source or f"built in code ({model.factory})"
        defaults = model.defaults or FAMILIES[model.family].defaults
        out.append(_row(model.name, "model", model.family, defaults, loads, model.summary))
    return out


def _row(name: str, kind: str, family: str, defaults: Defaults, loads_from: str, summary: str,
         **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "family": family, **dataclasses.asdict(defaults),
            "loads_from": loads_from, "summary": summary, **extra}


def _cfg(row: dict[str, Any]) -> str:
    return "off" if row["cfg_scale"] == 1.0 else f"{row['cfg_scale']:g} ({row['cfg_mode']})"


def print_table(table: list[dict[str, Any]]) -> None:
    """Columns as wide as their widest cell, so long layouts never run into the next column."""
    cells = [[r["name"], r["kind"], r["family"], r["tokens_per_image"], r["resolution"], str(r["window"]),
              str(r["top_k"] or "off"), _cfg(r), r["loads_from"]] for r in table]
    widths = [max(len(c) for c in column) + 2 for column in zip(COLUMNS, *cells, strict=True)]
    widths[-1] = 0
    head = "".join(f"{title:<{w}}" for title, w in zip(COLUMNS, widths, strict=True))
    print(head)
    print("-" * len(head))
    for row in cells:
        print("".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")


def main(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print_table(table)
    return 0
