"""Analysis: ``results.json`` files → tidy table → Tables 2–3 and Figures 4–6 under ``reports/``.

Entry points (each a notebook-as-script with ``# %%`` cells)::

    python -m analysis.collect --root outputs --out reports
    python -m analysis.tables --reports reports
    python -m analysis.figures --reports reports
    python -m analysis.report --reports reports

Only ``results.json`` files are read (never wandb).
"""
