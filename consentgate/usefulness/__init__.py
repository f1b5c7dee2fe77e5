"""Usefulness: how much each contribution helps the model it trains (pure, no I/O).

A purpose may name a reference set in the catalog: texts that show what its model needs.
Each contribution's usefulness is its exact KNN-Shapley value (Jia et al. 2019) for the
utility "how closely the K nearest contributions match each reference text", computed
over the period's contributions of that purpose and turned into a capped multiplier.

- ``embed``: the embedder interface and the shipped hashed word + character n-gram embedder;
- ``shapley``: exact KNN-Shapley values, vectorised with numpy;
- ``multiplier``: values to integer multipliers (milli), and the plain-words band a person sees;
- ``reference``: reading and checking a reference set's lines;
- ``period``: one purpose's contributions of one period valued and turned into multipliers.

The package imports nothing eagerly: the catalog reads reference sets through
``usefulness.reference`` on every load, and numpy and scikit-learn are loaded only by
the commands that value.
"""
