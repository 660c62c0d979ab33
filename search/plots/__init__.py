"""The search's plots: the numbers behind them, the figures, and PNGs that carry their numbers.

``numbers`` holds pure functions of plain lists (no imports beyond the standard library),
``figures`` draws them with matplotlib (imported inside the functions, so importing this
package costs nothing), ``png`` writes and reads the numbers inside each PNG. No MLflow.
"""

from search.plots.figures import (
    PLOT_FILES,
    plot_best_so_far,
    plot_groups,
    plot_importance,
    plot_parallel_coordinates,
    search_plots,
)
from search.plots.numbers import (
    GROUPS,
    NA,
    NA_POSITION,
    Axis,
    GroupStat,
    group_label,
    group_stats,
    parallel_axes,
    running_best,
)
from search.plots.png import DATA_KEY, PNG_MAGIC, plot_data, png_text

__all__ = [
    "DATA_KEY", "GROUPS", "NA", "NA_POSITION", "PLOT_FILES", "PNG_MAGIC", "Axis", "GroupStat", "group_label",
    "group_stats", "parallel_axes", "plot_best_so_far", "plot_data", "plot_groups", "plot_importance", "plot_parallel_coordinates",
    "png_text", "running_best", "search_plots",
]
