"""Command-line front ends (absl): flags → hyperparameters → library call."""
