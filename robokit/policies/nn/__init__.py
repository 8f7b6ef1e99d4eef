"""Building blocks shared by the policy families: image backbones and transformer layers."""
