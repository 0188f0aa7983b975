//! The ringmap device hosted in a user-mode process on Linux (issue 3 fills it in).
