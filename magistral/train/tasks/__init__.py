"""Tasks generated at training time: an image, a question, a step-by-step trace and an answer."""
