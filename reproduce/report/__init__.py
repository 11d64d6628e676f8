"""The paper's tables compiled from the tracking store, beside the paper's
numbers: the cells and their ties, the orderings over seeds, the plots."""
