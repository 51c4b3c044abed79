"""The one-command demo: the real node on the bundled recording (`cli`), and its acceptance checks (`checks`)."""
