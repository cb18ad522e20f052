"""``vaelab-explore ckpt_path=…``: a local web app for looking inside a trained model (issue 29).

A slider per latent dimension over the code of a test image, the interpolation between two images, samples from the
prior or from a Gaussian mixture fitted on the training codes, and the reconstruction of an uploaded image; served
by Gradio on 127.0.0.1 only, unless ``server_name`` says otherwise.

- :mod:`vaelab.explorer.config`: the command's ``key=value`` arguments, checked;
- :mod:`vaelab.explorer.source`: the model and its data, read the way ``vaelab-eval`` reads them;
- :mod:`vaelab.explorer.views`: what each view computes, as plain functions (a model and inputs in, numpy images
  out), testable without a server;
- :mod:`vaelab.explorer.app`: the Gradio page over them, and the command. Only it imports ``gradio``.
"""
