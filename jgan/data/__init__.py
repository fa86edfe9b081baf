"""Data for GAN experiments: toy mixtures of Gaussians and offline digits.

``ring`` and ``grid`` sample the 2-D mixtures of the mode-collapse literature
(Metz et al. 2017; VEEGAN; PacGAN); ``ring_centers`` / ``grid_centers`` give
their mode centres for ``jgan.metrics.mode_coverage``. ``mixture`` builds a
named preset (``"ring"``, ``"ring_pacgan"``, ``"grid"``) as a ``MixtureSpec``
and ``sample_mixture`` samples it. ``digits`` loads scikit-learn's bundled
8x8 handwritten digits, upsampled and scaled to ``[-1, 1]`` (no network).
"""

from jgan.data._digits import digits
from jgan.data._toy import MixtureSpec
from jgan.data._toy import grid
from jgan.data._toy import grid_centers
from jgan.data._toy import mixture
from jgan.data._toy import ring
from jgan.data._toy import ring_centers
from jgan.data._toy import sample_mixture
