//! Point-in-polygon by ray casting, for the configured regions.

/// A simple polygon in (lon, lat); the closing edge is implied.
#[derive(Debug, Clone)]
pub struct Polygon {
    points: Vec<(f64, f64)>,
    bbox: (f64, f64, f64, f64),
}

impl Polygon {
    pub fn new(points: Vec<(f64, f64)>) -> Self {
        let mut bbox = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for &(x, y) in &points {
            bbox = (bbox.0.min(x), bbox.1.min(y), bbox.2.max(x), bbox.3.max(y));
        }
        Self { points, bbox }
    }

    /// True when (lon, lat) lies inside; points exactly on an edge may go either way.
    pub fn contains(&self, lon: f64, lat: f64) -> bool {
        let (x0, y0, x1, y1) = self.bbox;
        if lon < x0 || lon > x1 || lat < y0 || lat > y1 || self.points.len() < 3 {
            return false;
        }
        let mut inside = false;
        let n = self.points.len();
        let mut j = n - 1;
        for i in 0..n {
            let (xi, yi) = self.points[i];
            let (xj, yj) = self.points[j];
            if (yi > lat) != (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concave_polygon() {
        // A "U": the notch between x=1..2, y=1..3 is outside.
        let u = Polygon::new(vec![
            (0.0, 0.0),
            (3.0, 0.0),
            (3.0, 3.0),
            (2.0, 3.0),
            (2.0, 1.0),
            (1.0, 1.0),
            (1.0, 3.0),
            (0.0, 3.0),
        ]);
        assert!(u.contains(0.5, 2.0));
        assert!(u.contains(2.5, 2.0));
        assert!(u.contains(1.5, 0.5));
        assert!(!u.contains(1.5, 2.0));
        assert!(!u.contains(4.0, 1.0));
        assert!(!u.contains(-0.1, 1.0));
    }

    #[test]
    fn moscow_default() {
        let m = crate::config::Region::moscow().polygon();
        assert!(m.contains(37.6173, 55.7558), "Red Square");
        assert!(!m.contains(30.3141, 59.9386), "Saint Petersburg");
    }
}
