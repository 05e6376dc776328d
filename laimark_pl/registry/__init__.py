"""MLflow record and deployment path of trained adapters.

* `tracking`: tracking URI (local SQLite by default), fail-fast reachability check, experiments,
  the LightningCLI config saver that logs to MLflow;
* `log_model` / `pyfunc_model`: an adapter as an MLflow pyfunc "model from code";
* `versions`: register, tag, promote (aliases), resolve;
* `serve`: ``mlflow models serve`` of ``models:/<name>@<alias>``;
* `plots`: reward / pass-rate curves and the learnability histogram as run artifacts;
* `cli`: ``laimark register | promote | serve``.

Submodules are imported on use (MLflow is a heavy import).
"""
