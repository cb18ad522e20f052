"""``python -m vaelab.explorer ckpt_path=… [key=value …]``: the same as ``vaelab-explore``."""

from vaelab.explorer.app import main

main()
