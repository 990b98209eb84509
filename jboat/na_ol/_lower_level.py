"""Which fast-weight entries are lower-level variables (``ll_var``)."""

__all__ = ["lower_level_positions", "trainable_entries"]


def lower_level_positions(ll_model, ll_var):
    """Indices into ``ll_model.parameters()`` of the ``ll_var`` entries.

    Fast weights are aligned with ``ll_model.parameters()``; implicit and
    finite-difference operators work on the lower-level variables only. Entries of
    ``ll_var`` that are not parameters of the model are ignored; if none is found,
    every parameter counts (``ll_var`` given in another form).
    """
    params = list(ll_model.parameters())
    index_of = {id(p): i for i, p in enumerate(params)}
    positions = [index_of[id(v)] for v in ll_var if id(v) in index_of]
    return positions if positions else list(range(len(params)))


def trainable_entries(params, positions):
    """``(positions, vars)`` of the entries of ``params`` that carry gradients."""
    kept = [i for i in positions if not params[i].is_stop_grad()]
    return kept, [params[i] for i in kept]
