"""``bench.png``: one horizontal bar per comparison, how many times better ours is.

The x axis is logarithmic (speedups run from about 1x to over 100x), with a line at 1x;
bars are coloured by what ours is compared with, so a ratio against the real released
stack is never mistaken for one against a re-implementation. matplotlib's Agg backend
draws without a display.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping

#: What ours is compared with -> (legend text, colour).
BASELINES = {
    "released": ("vs the released runtime / SDK itself", "#1f5fa8"),
    "released-approach": ("vs the released SDK's algorithm, re-implemented", "#8fb8e8"),
    "openai": ("vs the official openai client, direct", "#9a9a9a"),
}


def _label(c: Mapping[str, Any]) -> str:
    ours = c["ours"].replace("vastar_fast", "ours")
    text = f"{c['suite']}: {c['case']}"
    if len(text) > 58:
        text = text[:55] + "..."
    return f"{text}\n{c['metric']}, {ours}"


def render(doc: Mapping[str, Any], path: str) -> str:
    """Draw the comparisons of a ``bench.json`` document into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparisons: List[Dict[str, Any]] = [
        c for c in doc.get("comparisons") or [] if c["speedup"] > 0
    ]
    height = max(2.5, 0.42 * len(comparisons) + 1.6)
    fig, ax = plt.subplots(figsize=(11, height), dpi=110)
    try:
        if not comparisons:
            ax.text(0.5, 0.5, "no comparisons in this run", ha="center", va="center")
            ax.set_axis_off()
        else:
            labels = [_label(c) for c in comparisons]
            values = [c["speedup"] for c in comparisons]
            colours = [BASELINES.get(c["baseline"], ("", "#c07020"))[1] for c in comparisons]
            ys = list(range(len(comparisons)))[::-1]
            ax.barh(ys, values, color=colours, height=0.7)
            ax.set_xscale("log")
            ax.axvline(1.0, color="#333333", linewidth=1)
            ax.set_yticks(ys)
            ax.set_yticklabels(labels, fontsize=7)
            low = min(min(values) / 1.6, 0.5)
            high = max(values) * 3
            ax.set_xlim(low, high)
            for y, v in zip(ys, values):
                ax.text(
                    v * 1.06, y, f"{v:.1f}x" if v >= 10 else f"{v:.2f}x", va="center", fontsize=7
                )
            ax.set_xlabel("times better than the baseline (log scale; 1x = the same)")
            used = {c["baseline"] for c in comparisons}
            handles = [
                plt.Rectangle((0, 0), 1, 1, color=colour)
                for key, (_, colour) in BASELINES.items()
                if key in used
            ]
            names = [text for key, (text, _) in BASELINES.items() if key in used]
            if handles:
                ax.legend(handles, names, loc="lower right", fontsize=7)
            ax.grid(axis="x", which="both", alpha=0.25)
        machine = doc.get("machine") or {}
        title = (
            f"vastar-fast benchmarks{' (--quick)' if doc.get('quick') else ''}: "
            f"{machine.get('cpu_model', '?')}, {machine.get('usable_cpus', '?')} CPUs, "
            f"Python {machine.get('python', '?')}, {str(doc.get('created', ''))[:10]}"
        )
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
