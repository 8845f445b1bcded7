"""``dal check``: documents against the model, derived keys against their documents, repair."""
