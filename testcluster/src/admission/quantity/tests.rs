//! Quantities as apimachinery parses and prints them.

use super::*;

fn text(s: &str) -> String {
    Quantity::parse(s).expect(s).to_string()
}

#[test]
fn parses_and_prints_like_apimachinery() {
    for (input, out) in [
        ("500m", "500m"),
        ("2", "2"),
        ("1.5", "1500m"),
        ("0.5", "500m"),
        ("8Gi", "8Gi"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("1000", "1k"),
        ("1500", "1500"),
        ("12e6", "12e6"),
        ("1e3", "1e3"),
        ("+1", "+1"),
        ("01", "01"),
        ("1n", "1m"),
        ("0.0001", "1m"),
        ("100Mi", "100Mi"),
        ("512", "512"),
        ("0", "0"),
        ("Gi", "0"),
        ("-1", "-1"),
        ("129M", "129M"),
        ("1.0", "1"),
    ] {
        assert_eq!(text(input), out, "{input}");
    }
}

#[test]
fn refuses_what_apimachinery_refuses() {
    assert_eq!(Quantity::parse("abc").unwrap_err().0, FORMAT_WRONG);
    assert_eq!(Quantity::parse("").unwrap_err().0, FORMAT_WRONG);
    assert_eq!(Quantity::parse("1.5.5").unwrap_err().0, FORMAT_WRONG);
    assert_eq!(Quantity::parse("1i").unwrap_err().0, SUFFIX);
    assert_eq!(Quantity::parse("2 Gi").unwrap_err().0, FORMAT_WRONG);
}

#[test]
fn values_compare_exactly() {
    let q = |s| Quantity::parse(s).expect(s);
    assert!(q("1") == q("1000m"));
    assert!(q("1.5") > q("1"));
    assert_eq!(q("8Gi").value(), 8 << 30);
    assert_eq!(q("1500m").value(), 2);
    assert_eq!(q("500m").millis(), 500);
    assert!(!q("500m").is_whole() && q("3000m").is_whole() && q("3Ki").is_whole());
}

#[test]
fn go_syntax_matches_the_validation_message() {
    let q = Quantity::parse("500m").expect("500m");
    assert_eq!(
        q.go_syntax(),
        "resource.Quantity{i:resource.int64Amount{value:500, scale:-3}, \
         d:resource.infDecAmount{Dec:(*inf.Dec)(nil)}, s:\"500m\", Format:\"DecimalSI\"}"
    );
    let q = Quantity::parse("0.5").expect("0.5");
    assert!(q.go_syntax().contains("value:5, scale:-1}") && q.go_syntax().contains("s:\"\""));
}
