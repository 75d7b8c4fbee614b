"""Files for installing the line on a plant PC: the systemd unit and the offline installer."""
