"""zeroshot: training-free, zero-shot video generation from frozen text-to-image models.

Importing the package is cheap: heavy parts (cv2, kornia, ray) are imported where used.
"""

__version__ = "0.1.0"
