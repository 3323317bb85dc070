//! `ubtc verify` for reserve attestations: the input is told apart from a proof bundle
//! by its `format` field, then verified offline against the pinned registry, if any.
//! Exit 0 valid (or unpinned, unless the pin is required), 1 invalid, 2 unreadable.

use std::io::Write as _;
use std::process::ExitCode;

use ubtc_bitcoin::attestation::verify_attestation_pinned;
use ubtc_bitcoin::bundle::RegistryPin;
use ubtc_core::attestation::{ReserveAttestation, ATTESTATION_FORMAT, ATTESTATION_MAX_BYTES};

/// The most bytes `ubtc verify` reads: enough for the larger of the two documents.
pub const MAX_INPUT_BYTES: usize = if ATTESTATION_MAX_BYTES > ubtc_core::bundle::BUNDLE_MAX_BYTES {
    ATTESTATION_MAX_BYTES
} else {
    ubtc_core::bundle::BUNDLE_MAX_BYTES
};

#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    format: Option<String>,
}

/// Verifies `bytes` when they are an attestation; `None` for anything else (the
/// caller reads it as a bundle and reports what is wrong with it).
pub fn dispatch(
    bytes: &[u8],
    file: &str,
    json: bool,
    pin: Option<&RegistryPin>,
    require_pin: bool,
) -> Option<ExitCode> {
    // Peeking ignores every other field, so it costs one pass and no allocation of
    // the document's lists.
    let is_attestation = match serde_json::from_slice::<Peek>(bytes) {
        Ok(peek) => peek.format.as_deref() == Some(ATTESTATION_FORMAT),
        // Not JSON (a truncated download, say): it is an attestation if it names
        // the format, so that the error says what it is.
        Err(_) => {
            let tag = format!("\"{ATTESTATION_FORMAT}\"");
            bytes.windows(tag.len()).any(|w| w == tag.as_bytes())
        }
    };
    if !is_attestation {
        return None;
    }
    let att = match ReserveAttestation::from_json(bytes) {
        Ok(a) => a,
        Err(e) => {
            let message = format!("{file} is not a readable reserve attestation: {e}");
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "unreadable": true, "code": e.code(), "error": message })
                );
            } else {
                eprintln!("unreadable input [{}]: {message}", e.code());
            }
            return Some(ExitCode::from(2));
        }
    };
    let report = verify_attestation_pinned(&att, pin);
    // A closed pipe (`ubtc verify FILE | head`) is not an error of the document:
    // write errors are ignored rather than panicking in print!.
    let mut out = std::io::stdout().lock();
    let _ = if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )
    } else {
        write!(out, "{report}")
    };
    Some(if report.is_valid() && (report.pinned || !require_pin) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
