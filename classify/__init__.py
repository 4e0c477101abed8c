"""classify: train and evaluate gender heads on stored backbone features (numpy + scikit-learn, no torch).

Stages: `classify.heads` (estimators), `classify.metrics`, `classify.protocol` (the evaluation protocol
and one run), `classify.results` (results files, saved heads), `classify.compare` (leaderboard, plots),
`classify.predict` (heads on new images through `extract`, imported lazily), `classify.cli`.
"""
