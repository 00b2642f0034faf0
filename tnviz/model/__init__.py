"""Models in: safe weight loading, bundled demos, calibration statistics and functional evaluation."""
