"""search: distributed hyperparameter search for Keras networks.

Spaces (``search.space``) describe what to try, ``search.data`` loads the datasets,
``search.model`` builds a Keras model from one config, ``search.train`` fits it,
``search.tune`` runs many fits with Ray Tune and ``search.tracking`` records them in MLflow.
"""

__version__ = "0.1.0"
