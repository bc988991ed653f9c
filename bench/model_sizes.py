"""Parameter counts of every encoder preset with the 768- and 256-wide heads (25 classes).

Run: ``.venv/bin/python bench/model_sizes.py``
"""

from __future__ import annotations

from robustseg_core.models import MODEL_PRESETS, build_segmentor


def count(module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def main() -> None:
    print("| preset | encoder | total, head 768 | total, head 256 |")
    print("|---|---:|---:|---:|")
    for preset in MODEL_PRESETS:
        wide, narrow = build_segmentor(preset, embed_dim=768), build_segmentor(preset, embed_dim=256)
        print(f"| {preset} | {count(wide.encoder):,} | {count(wide):,} | {count(narrow):,} |")


if __name__ == "__main__":
    main()
