//! The members of the Light U-net family and the per-layer choices that distinguish them.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Which network: `unet`, `light` or `lighter@C` (C in 1, 2, 4, ..., 128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// U-net: regular 3x3 convolutions in both conv sets.
    UNet,
    /// Light U-net: regular conv set 1, depthwise-separable conv set 2.
    Light,
    /// Lighter U-net@C: separable conv sets with C channels per group in the grouped 3x3.
    Lighter(u32),
}

/// What one conv set of a DoubleConv is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvSetKind {
    Regular,
    /// Grouped 3x3 with this parameter C, then a pointwise 1x1.
    Separable { c: u32 },
}

impl Variant {
    /// Every variant, in the order `info` lists them.
    pub fn all() -> Vec<Variant> {
        let mut v = vec![Variant::UNet, Variant::Light];
        v.extend([1, 2, 4, 8, 16, 32, 64, 128].map(Variant::Lighter));
        v
    }

    /// Conv set 1 and conv set 2 of every DoubleConv.
    pub fn conv_sets(self) -> (ConvSetKind, ConvSetKind) {
        use ConvSetKind::*;
        match self {
            Variant::UNet => (Regular, Regular),
            Variant::Light => (Regular, Separable { c: 1 }),
            Variant::Lighter(c) => (Separable { c }, Separable { c }),
        }
    }

    /// Name of the original repository's model class, for model cards and messages.
    pub fn paper_name(self) -> String {
        match self {
            Variant::UNet => "U-net".into(),
            Variant::Light => "Light U-net".into(),
            Variant::Lighter(c) => format!("Lighter U-net@{c}"),
        }
    }
}

/// Channels per group of a separable conv set's grouped 3x3 (SPEC.md): 3 when the input has 3
/// channels and C != 1, else min(C, c_in).
pub fn channels_per_group(c: u32, c_in: usize) -> usize {
    if c_in == 3 && c != 1 {
        3
    } else {
        (c as usize).min(c_in)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::UNet => write!(f, "unet"),
            Variant::Light => write!(f, "light"),
            Variant::Lighter(c) => write!(f, "lighter@{c}"),
        }
    }
}

impl FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "unet" | "u-net" => Ok(Variant::UNet),
            "light" | "light-unet" | "light_unet" => Ok(Variant::Light),
            _ => {
                let c = t
                    .strip_prefix("lighter@")
                    .or_else(|| t.strip_prefix("lighter_u-net@"))
                    .and_then(|c| c.parse::<u32>().ok())
                    .filter(|c| c.is_power_of_two() && *c <= 128)
                    .ok_or_else(|| Error::UnknownVariant(s.to_string()))?;
                Ok(Variant::Lighter(c))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_round_trip() {
        for v in Variant::all() {
            assert_eq!(v.to_string().parse::<Variant>().unwrap(), v);
        }
        assert!("lighter@3".parse::<Variant>().is_err());
        assert!("lighter@256".parse::<Variant>().is_err());
        assert!("resnet".parse::<Variant>().is_err());
    }
}
