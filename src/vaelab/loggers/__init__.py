"""The trackers as vaelab writes them: TensorBoard (``tensorboard``: HParams, config card, results), MLflow
(``mlflow``) and Weights & Biases (``wandb``), what the last two share (``tracking``: one message before training,
carry on with one warning after), and the dashboard's pictures read back from TensorBoard's events
(``event_images``)."""
