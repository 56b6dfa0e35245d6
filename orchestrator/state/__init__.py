"""Pure values of the reconciler: desired state, observed state, lifecycle, canonical forms."""
