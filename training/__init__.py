"""training: LISA's training data (the paper's datasets in their real layouts) and evaluation.

ROS-free; builds on lisa_model's prompt, tokenisation and preprocessing code so that
training, evaluation and inference share one prompt path.
"""
