"""Stage 1, capture: session events record what each flush writes; nothing leaves before COMMIT."""
