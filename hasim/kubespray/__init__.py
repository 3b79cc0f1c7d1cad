"""hasim's the cluster as kubespray reads it: hosts, inventories, endpoint rules, fault targets,
knobs."""
