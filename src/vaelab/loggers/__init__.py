"""The trackers as vaelab writes them: TensorBoard (``tensorboard``: HParams, config card, results) and MLflow
(``mlflow``), and the dashboard's pictures read back from TensorBoard's events (``event_images``)."""
