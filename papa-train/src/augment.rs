//! Per-member data augmentation and regularisation settings.
