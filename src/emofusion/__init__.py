"""EmoFusion: speech emotion recognition by fusing CNN features of spectrograms with MFCC and LPCC."""

__version__ = "0.1.0"
