"""gradcourse: the helper package of a course on vanishing and exploding gradients."""
