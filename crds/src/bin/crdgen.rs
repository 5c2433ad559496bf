//! Prints the ScheduledJob CustomResourceDefinition as YAML.
use kube::CustomResourceExt;

fn main() {
    let crd = raftcron_crds::ScheduledJob::crd();
    print!(
        "{}",
        serde_yaml::to_string(&crd).expect("CRD serializes to YAML")
    );
}
