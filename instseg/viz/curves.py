"""Validation-loss curves of head runs: what the plateau check under each table read."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


def plot_val_curves(runs: pd.DataFrame, group: str = "config") -> Figure:
    """One panel per trained configuration, one line per seed; the last 20% (the plateau check's
    window) shaded."""
    trained = runs.dropna(subset=["val_curve"]).drop_duplicates([group, "seed"])
    groups = list(dict.fromkeys(trained[group]))
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(2.2 * max(1, len(groups)), 2.2), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], groups):
        for _, row in trained[trained[group] == name].iterrows():
            it, loss = zip(*row["val_curve"])
            ax.plot(it, loss, lw=1, label=f"seed {row['seed']}")
            ax.axvspan(0.8 * it[-1], it[-1], color="0.9", zorder=0)
        ax.set_title(str(name).replace("_", " "), fontsize=7)
        ax.set_xlabel("iteration", fontsize=7)
    axes[0][0].set_ylabel("validation loss")
    fig.tight_layout()
    return fig
