"""Raw HPO logs -> metrics -> every table and figure of the study.

Reads only results/<scale>/<method>/seed<k>/{results.csv, learning_curves.csv, metadata.json}
(see analysis.logs); never imports the searches or the model.
    python -m analysis.make_figures --scale small     # paper_figures/small/ from the logs
    python -m analysis.physics --scale small          # retrain best vs default, physics table
"""
