"""E2ENet (3D medical segmentation with dynamic sparse feature fusion and restricted depth-shift convs)."""
