"""mnist-flow: a rectified-flow text-to-image model of Stable Diffusion 3's architecture, trained here."""
