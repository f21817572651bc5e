"""Hardware, the model catalogue, the fit and the local model store: which model, and where it lives."""
