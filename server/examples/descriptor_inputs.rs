//! Writes the descriptor reference inputs (raw 150x150 RGB files and an index) for
//! `tools/faceapi-reference/reference.mjs`.
//!
//! cargo run -p facesim-server --example descriptor_inputs -- /tmp/descriptor-inputs

#[path = "../tests/support/reference_inputs.rs"]
mod reference_inputs;

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "descriptor-inputs".into()));
    std::fs::create_dir_all(&out)?;
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/lfw-demo");
    let inputs = reference_inputs::reference_inputs(&demo);
    for (name, image) in &inputs {
        std::fs::write(out.join(format!("{name}.rgb")), image.as_raw())?;
    }
    let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    std::fs::write(out.join("index.json"), serde_json::to_string(&names)?)?;
    println!("wrote {} inputs to {}", inputs.len(), out.display());
    Ok(())
}
