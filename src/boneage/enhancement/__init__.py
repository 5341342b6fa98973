"""Radiograph enhancement by a pix2pix GAN (issue 12; paper sections 2.3 and 3.3).

- :mod:`~boneage.models.enhancer`: the U-Net generator, the pair discriminator and the
  generator file format;
- :mod:`~boneage.enhancement.pairs`: (degraded, original) training pairs;
- :mod:`~boneage.enhancement.task`: ``task: gan`` for the one training loop.

A trained generator is the ``gan_enhance`` preprocessing step of a bone-age recipe, and is
embedded in that model's file like any network-backed step.
"""
