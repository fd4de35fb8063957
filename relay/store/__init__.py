"""All SQL of relay: migrations, and the typed store the rest of the code calls."""
